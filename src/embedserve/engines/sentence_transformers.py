"""Engines on sentence-transformers (torch): dense, sparse (SPLADE), cross-encoder and the
bi-encoder "similarity" reranker."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import (
    DenseEngine,
    FloatArray,
    IntArray,
    RerankEngine,
    Side,
    SparseEngine,
    SparseVector,
    Token,
)

log = logging.getLogger(__name__)
BATCH_SIZE = 32


def resolve_device(device: str) -> str:
    """``auto`` becomes cuda, then mps, then cpu, whichever this machine has."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_kwargs(entry: CatalogEntry) -> dict[str, Any]:
    spec = entry.spec
    kwargs: dict[str, Any] = {
        "device": resolve_device(spec.device),
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.revision is not None and entry.source.kind == "hub":
        kwargs["revision"] = spec.revision
    return kwargs


def _position_limit(model: Any) -> int | None:
    config = getattr(model, "config", None) or getattr(getattr(model, "auto_model", None), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) else None


class _TokenCounter:
    """Counts tokens with the model's own tokenizer, special tokens included, untruncated."""

    tokenizer: Any

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [len(ids) for ids in encoded["input_ids"]]

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[Token]]:
        encoded = self.tokenizer(
            list(texts),
            add_special_tokens=add_special_tokens,
            truncation=False,
            verbose=False,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        out = []
        for j, text in enumerate(texts):
            ids = [int(i) for i in encoded["input_ids"][j]]
            names = self.tokenizer.convert_ids_to_tokens(ids)
            tokens = []
            for id_, name, special, (start, stop) in zip(
                ids, names, encoded["special_tokens_mask"][j], encoded["offset_mapping"][j], strict=True
            ):
                if special:
                    tokens.append(Token(id_, str(name), True, None, None))
                else:
                    tokens.append(Token(id_, text[start:stop], False, int(start), int(stop)))
            out.append(tokens)
        return out

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return [str(self.tokenizer.decode(list(row), skip_special_tokens=skip_special_tokens)) for row in ids]

    def clip(self, texts: Sequence[str], drop: Sequence[int], side: Side) -> list[str]:
        out = list(texts)
        todo = [i for i, n in enumerate(drop) if n > 0]
        if not todo:
            return out
        encoded = self.tokenizer(
            [texts[i] for i in todo],
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        for j, i in enumerate(todo):
            offsets = encoded["offset_mapping"][j]
            keep = len(offsets) - drop[i]
            if keep <= 0:
                out[i] = ""
            elif side == "right":
                out[i] = texts[i][: offsets[keep - 1][1]]
            else:
                words = encoded.word_ids(j)
                first = len(offsets) - keep
                while first < len(offsets) and words[first] is not None and words[first] == words[first - 1]:
                    first += 1  # not inside a word: the rest must tokenize as it did
                out[i] = texts[i][offsets[first][0] :] if first < len(offsets) else ""
        return out


class _BiEncoder(_TokenCounter):
    """Shared loading of SentenceTransformer and SparseEncoder models."""

    model: Any  # SentenceTransformer or SparseEncoder

    def _setup(self, model: Any, entry: CatalogEntry) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        self.device = str(model.device)
        if entry.spec.max_length is not None:
            limit = _position_limit(model[0])
            if limit is not None and entry.spec.max_length > limit:
                raise ValueError(f"max_length {entry.spec.max_length} exceeds the model's {limit} positions")
            model.max_seq_length = entry.spec.max_length
        self.max_length = int(model.max_seq_length or _position_limit(model[0]) or 512)

    def close(self) -> None:
        del self.model
        gc.collect()


class STDenseEngine(_BiEncoder, DenseEngine):
    def __init__(self, entry: CatalogEntry) -> None:
        self._setup(SentenceTransformer(entry.source.location, **_load_kwargs(entry)), entry)
        self.dimension = int(self.model.get_embedding_dimension() or 0)

    def embed(self, texts: Sequence[str], prompt: str | None) -> FloatArray:
        with torch.inference_mode():
            out = self.model.encode(
                list(texts),
                prompt=prompt,
                batch_size=BATCH_SIZE,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


class STSparseEngine(_BiEncoder, SparseEngine):
    def __init__(self, entry: CatalogEntry) -> None:
        self._setup(SparseEncoder(entry.source.location, **_load_kwargs(entry)), entry)
        # the vocabulary, not the hidden size that get_embedding_dimension reports for MLM models
        config = getattr(self.model[0], "auto_model", None)
        self.dimension = int(getattr(getattr(config, "config", None), "vocab_size", 0) or len(self.tokenizer))

    def embed_sparse(self, texts: Sequence[str], prompt: str | None) -> list[SparseVector]:
        with torch.inference_mode():
            out = self.model.encode(
                list(texts),
                prompt=prompt,
                batch_size=BATCH_SIZE,
                convert_to_sparse_tensor=True,
                show_progress_bar=False,
            )
            coo = out.coalesce().cpu()  # coalesced: sorted by row, then column
            rows = coo.indices()[0].numpy()
            cols = coo.indices()[1].numpy().astype(np.int64)
            values = coo.values().numpy().astype(np.float32)
        bounds = np.searchsorted(rows, np.arange(len(texts) + 1))
        return [
            SparseVector(cols[bounds[i] : bounds[i + 1]], values[bounds[i] : bounds[i + 1]]) for i in range(len(texts))
        ]

    def tokens(self, indices: IntArray) -> list[str]:
        return [str(t) for t in self.tokenizer.convert_ids_to_tokens([int(i) for i in indices])]


class CrossEncoderEngine(_TokenCounter, RerankEngine):
    """A real reranker: the query and each document go through the model together."""

    def __init__(self, entry: CatalogEntry) -> None:
        kwargs = _load_kwargs(entry)
        if entry.spec.max_length is not None:
            kwargs["max_length"] = entry.spec.max_length
        self.model = CrossEncoder(entry.source.location, **kwargs)
        if self.model.num_labels != 1:
            raise ValueError(f"a reranker needs one output label; this model has {self.model.num_labels}")
        self.tokenizer = self.model.tokenizer
        self.device = str(self.model.device)
        self.max_length = int(self.model.max_seq_length or _position_limit(self.model[0]) or 512)

    def count_pair_tokens(self, query: str, documents: Sequence[str]) -> tuple[int, list[int]]:
        encoded = self.tokenizer(
            [query] * len(documents),
            list(documents),
            add_special_tokens=True,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return 0, [len(ids) for ids in encoded["input_ids"]]

    def score(self, query: str, documents: Sequence[str]) -> FloatArray:
        with torch.inference_mode():
            out = self.model.predict(
                [(query, d) for d in documents],
                batch_size=BATCH_SIZE,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32).reshape(len(documents))

    def score_raw(self, query: str, documents: Sequence[str]) -> FloatArray:
        """The model's logits, without its activation (sigmoid for one label)."""
        with torch.inference_mode():
            out = self.model.predict(
                [(query, d) for d in documents],
                batch_size=BATCH_SIZE,
                convert_to_numpy=True,
                show_progress_bar=False,
                activation_fn=torch.nn.Identity(),
            )
        return np.asarray(out, dtype=np.float32).reshape(len(documents))

    def close(self) -> None:
        del self.model
        gc.collect()


class SimilarityRerankEngine(_BiEncoder, RerankEngine):
    """Reranks with a bi-encoder: cosine of the query's and each document's embedding.

    Weaker than a cross-encoder, but it needs only a dense model. The catalogue's ``query``
    and ``document`` prompts, when defined, are used for the two sides.
    """

    def __init__(self, entry: CatalogEntry) -> None:
        self._setup(SentenceTransformer(entry.source.location, **_load_kwargs(entry)), entry)
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self.query_prompt = entry.spec.prompts.get("query")
        self.document_prompt = entry.spec.prompts.get("document")

    def count_pair_tokens(self, query: str, documents: Sequence[str]) -> tuple[int, list[int]]:
        """The query is embedded once, on its own, and each document on its own."""
        query_tokens = self.count_tokens([(self.query_prompt or "") + query])[0]
        return query_tokens, self.count_tokens([(self.document_prompt or "") + d for d in documents])

    def score(self, query: str, documents: Sequence[str]) -> FloatArray:
        with torch.inference_mode():
            q = self.model.encode(
                [query],
                prompt=self.query_prompt,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            d = self.model.encode(
                list(documents),
                prompt=self.document_prompt,
                batch_size=BATCH_SIZE,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(d @ q[0], dtype=np.float32)

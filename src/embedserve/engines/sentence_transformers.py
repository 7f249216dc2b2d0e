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
    SparseEngine,
    SparseVector,
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

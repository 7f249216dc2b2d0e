"""Late interaction on torch: sentence-transformers' ``MultiVectorEncoder`` (ColBERT, in its own
format or PyLate's) and the ``late-interaction`` reranker.

The multi-vector engine encodes as ``encode_query`` / ``encode_document`` do: the model's
``query`` / ``document`` prompts (the ``[Q] `` / ``[D] `` markers) in front of the text, each
side cut to its own length (``query_length`` / ``document_length`` of the Transformer module),
queries expanded with the expansion token (``[MASK]``) to the expansion length, then the model's
modules (the transformer, the linear projection, ``MultiVectorMask`` with its skiplist on
documents, the normalization) with ``task`` set. What is kept is what the scoring mask keeps.

The reranker scores a query against each document by MaxSim. On a ColBERT model it uses the
model's two sides and its similarity (``maxsim`` or ``meanmaxsim``); on a plain
SentenceTransformer (no multi-vector configuration) it takes the transformer's token embeddings,
every real token, L2-normalized, and scores ``meanmaxsim``, so scores lie in [-1, 1].
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.multi_vector_encoder import MultiVectorEncoder

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import EngineOptions, FloatArray, RerankEngine, RerankUnits
from embedserve.engines.multi_vector import (
    DOCUMENT_GROUP,
    QUERY_GROUP,
    InputKind,
    MultiVectorEngine,
    Similarity,
    TokenVectors,
    maxsim,
)
from embedserve.engines.sentence_transformers import _load_kwargs, _position_limit, _STModel
from embedserve.engines.tokenization import Side, TextTokenizer, Tokens

log = logging.getLogger(__name__)


def is_multi_vector_model(location: str) -> bool:
    """Whether the model at ``location`` (a directory) is a MultiVectorEncoder or PyLate ColBERT:
    its ``config_sentence_transformers.json`` says so. A hub id counts as one when its cached
    snapshot does."""
    path = Path(location) / "config_sentence_transformers.json"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(location, "config_sentence_transformers.json", local_files_only=True))
        except Exception:
            return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "MultiVectorEncoder" or "query_prefix" in config or "query_length" in config


class ColBERTEngine(_STModel, MultiVectorEngine):
    """A MultiVectorEncoder's token vectors, query and document sides as its library encodes them."""

    task = "multi-vector"

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        model = MultiVectorEncoder(entry.source.location, **_load_kwargs(entry))
        transformer = model[0]
        if entry.spec.max_length is not None:
            limit = _position_limit(transformer)
            if limit is not None and entry.spec.max_length > limit:
                raise ValueError(f"max_length {entry.spec.max_length} exceeds the model's {limit} positions")
            model.max_seq_length = entry.spec.max_length
        self._attach(model, int(model.max_seq_length or _position_limit(transformer) or 512))
        self.similarity: Similarity = model.similarity_fn_name
        prompts = model.prompts or {}
        self.prompts: dict[InputKind, str] = {
            "query": prompts.get("query") or "",
            "document": next((str(prompts[k]) for k in ("document", "passage", "corpus") if prompts.get(k)), ""),
        }
        self.query_length: int | None = getattr(transformer, "query_length", None)
        self.document_length: int | None = getattr(transformer, "document_length", None)
        self.expansion: dict[str, Any] | None = getattr(transformer, "query_expansion", None)
        self.expansion_id: int | None = None
        if self.expansion is not None:
            hf = model.tokenizer
            token = self.expansion.get("token")
            found = hf.convert_tokens_to_ids(token) if token is not None else hf.mask_token_id
            self.expansion_id = int(found if found is not None else hf.eos_token_id)
            if self.tokenizer.pad_left:
                raise ValueError("query expansion needs a tokenizer that pads on the right")
        self.dimension = self._dimension()

    def _dimension(self) -> int:
        with torch.inference_mode():
            probe = self.forward(self.encode_inputs(["a"], "document"))
        return int(probe[0].vectors.shape[1]) if probe and probe[0].vectors.ndim == 2 else 0

    def side_limit(self, kind: InputKind) -> int:
        """Tokens a text of this side is cut to, as the library's preprocess sets ``max_length``."""
        if kind == "document":
            return self.document_length or self.max_length
        if self.expansion is None:
            return self.query_length or self.max_length
        floor = int(self.expansion["length"])
        if self.expansion["strategy"] == "fixed":
            return floor
        return max(self.query_length, floor) if self.query_length is not None else self.max_length

    def encode_inputs(
        self, texts: Sequence[str], kind: InputKind, side: Side = "right", limit: int | None = None
    ) -> list[Tokens]:
        prompt = self.prompts[kind]
        cap = self.side_limit(kind)
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        group = QUERY_GROUP if kind == "query" else DOCUMENT_GROUP
        return _encode(self.tokenizer, inputs, side, group, min(cap, limit) if limit else cap)

    def _arrays(self, batch: Sequence[Tokens]) -> dict[str, Any]:
        arrays = self.tokenizer.pad(batch)
        features: dict[str, Any] = {k: torch.from_numpy(v) for k, v in arrays.items() if k in self._inputs}
        features["modality"] = "text"
        if batch[0].group == QUERY_GROUP and self.expansion is not None and self.expansion_id is not None:
            floor = int(self.expansion["length"])
            ids, mask = features["input_ids"], features["attention_mask"]
            if ids.shape[1] < floor:  # widened to the expansion length (the library's 'min' does the same)
                missing = floor - ids.shape[1]
                for name in ("input_ids", "attention_mask", "token_type_ids"):
                    if name in features:
                        features[name] = torch.nn.functional.pad(features[name], (0, missing), value=0)
                ids, mask = features["input_ids"], features["attention_mask"]
            positions = (mask == 0) & (torch.arange(ids.shape[1]) < floor)
            features["input_ids"] = ids.masked_fill(positions, self.expansion_id)
            features["query_expansion_positions"] = positions
            if self.expansion.get("attend"):
                features["attention_mask"] = mask.masked_fill(positions, 1)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def forward(self, batch: Sequence[Tokens]) -> list[TokenVectors]:
        kind = "query" if batch[0].group == QUERY_GROUP else "document"
        features = self._arrays(batch)
        with torch.inference_mode():
            out = self.model(features, task=kind)
        embeddings = out["token_embeddings"].float().cpu()
        keep = out["attention_mask"].bool().cpu()
        ids = out["input_ids"].cpu() if "input_ids" in out else features["input_ids"].cpu()
        return [
            TokenVectors(embeddings[i][keep[i]].numpy(), ids[i][keep[i]].numpy().astype(np.int64))
            for i in range(len(batch))
        ]


def _encode(tokenizer: TextTokenizer, inputs: list[str], side: Side, group: int, limit: int) -> list[Tokens]:
    """Units cut to ``limit`` tokens, which may exceed the tokenizer's own limit when a side's
    length does (the model's positions were checked at load)."""
    if limit <= tokenizer.max_length:
        return tokenizer.encode(inputs, side, group=group, limit=limit)
    wide = TextTokenizer(tokenizer.hf, limit)
    return wide.encode(inputs, side, group=group)


class TokenEmbeddingEngine(_STModel, MultiVectorEngine):
    """A plain SentenceTransformer's token embeddings (the transformer's output, before pooling),
    every real token, L2-normalized: late interaction without a ColBERT model."""

    task = "dense"
    similarity: Similarity = "meanmaxsim"

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        model = SentenceTransformer(entry.source.location, **_load_kwargs(entry))
        if entry.spec.max_length is not None:
            model.max_seq_length = entry.spec.max_length
        self._attach(model, int(model.max_seq_length or _position_limit(model[0]) or 512))
        self.dimension = int(model.get_embedding_dimension() or 0) or None
        prompts = entry.spec.prompts
        self.prompts: dict[InputKind, str] = {
            "query": prompts.get("query", ""),
            "document": prompts.get("document", ""),
        }

    def encode_inputs(
        self, texts: Sequence[str], kind: InputKind, side: Side = "right", limit: int | None = None
    ) -> list[Tokens]:
        prompt = self.prompts[kind]
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        return self.tokenizer.encode(inputs, side, limit=limit)

    def forward(self, batch: Sequence[Tokens]) -> list[TokenVectors]:
        features = self._features(batch)
        with torch.inference_mode():
            tokens = self.model[0](dict(features))["token_embeddings"].float()
            unit = torch.nn.functional.normalize(tokens, p=2, dim=-1).cpu()
        mask = features["attention_mask"].bool().cpu()
        ids = features["input_ids"].cpu()
        return [
            TokenVectors(unit[i][mask[i]].numpy(), ids[i][mask[i]].numpy().astype(np.int64)) for i in range(len(batch))
        ]


class LateInteractionRerankEngine(RerankEngine):
    """Reranks by MaxSim between the query's and each document's token vectors. Units: the query
    (as a query), then each document (as a document)."""

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        colbert = is_multi_vector_model(entry.source.location)
        inner = ColBERTEngine(entry, options) if colbert else TokenEmbeddingEngine(entry, options)
        self.inner: MultiVectorEngine = inner
        self.tokenizer = self.inner.tokenizer
        self.max_length = self.inner.max_length
        self.dimension = self.inner.dimension
        self.device = self.inner.device
        self.passes = self.inner.passes
        self.shares_device = self.inner.shares_device
        self.max_batch_tokens = self.inner.max_batch_tokens
        log.info(
            "model %s: late interaction over %s, %s",
            entry.id,
            "its ColBERT vectors" if colbert else "its token embeddings",
            self.inner.similarity,
        )

    def pass_threads(self, passes: int) -> None:
        self.inner.pass_threads(passes)

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        units = self.inner.encode_inputs([query], "query", side)
        return RerankUnits(units + self.inner.encode_inputs(documents, "document", side, doc_limit), query_units=1)

    def forward(self, batch: Sequence[Tokens]) -> list[TokenVectors]:  # type: ignore[override]
        return self.inner.forward(batch)

    def scores(self, outputs: Any, query_units: int, raw: bool = False) -> FloatArray:
        query: TokenVectors = outputs[0]
        return np.array(
            [maxsim(query.vectors, d.vectors, self.inner.similarity).score for d in outputs[query_units:]],
            dtype=np.float32,
        )

    def close(self) -> None:
        self.inner.close()

"""Engines on sentence-transformers (torch): dense, sparse (SPLADE), cross-encoder and the
bi-encoder "similarity" reranker.

The library loads the model; embedserve tokenizes (see ``tokenization``) and calls the
model's own ``forward`` on padded tensors, so the outputs equal ``encode``/``predict`` while
each text is tokenized only once and batches can mix requests.

With ``backend: onnx`` or ``openvino`` the same pipeline, exported once (``export``), runs on
ONNX Runtime or OpenVINO (``runtimes``) instead, and the torch weights are dropped after the
export; tokenization and post-processing stay the same.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder
from sentence_transformers.util import select_max_active_dims

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import (
    DenseEngine,
    FloatArray,
    RerankEngine,
    RerankUnits,
    SparseEngine,
    SparseVector,
    TextEngine,
)
from embedserve.engines.first_token import first_token_last_layer
from embedserve.engines.runtimes import Lanes
from embedserve.engines.tokenization import Side, TextTokenizer, Tokens

log = logging.getLogger(__name__)
# torch's intra-op threads as the server set them (EMBEDSERVE_TORCH_THREADS, else the cores),
# read once at import, before any batch thread changed its own (torch.set_num_threads also
# changes what threads started later begin with)
_TORCH_THREADS = torch.get_num_threads()
_pass_threads = threading.local()  # what each batch thread last set


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
        # onnx/openvino: the torch model is only exported (on the CPU), then dropped
        "device": resolve_device(spec.device) if spec.backend == "torch" else "cpu",
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.revision is not None and entry.source.kind == "hub":
        kwargs["revision"] = spec.revision
    return kwargs


def _position_limit(model: Any) -> int | None:
    config = getattr(model, "config", None) or getattr(getattr(model, "auto_model", None), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) else None


class _STModel:
    """Forward passes through a sentence-transformers model on padded tensors."""

    model: Any
    tokenizer: TextTokenizer
    device: str
    runtime: Lanes | None = None
    task: str  # what an export of it is: dense, sparse or cross-encoder

    def _attach(self, model: Any, max_length: int) -> None:
        self.model = model
        self.model.eval()
        self.device = str(model.device)
        self.max_length = max_length
        self.tokenizer = TextTokenizer(model.tokenizer, max_length)
        names = getattr(model.tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"]
        self._inputs = {"input_ids", "attention_mask", *names} & {"input_ids", "attention_mask", "token_type_ids"}
        self._share_cpu()

    def _share_cpu(self) -> None:
        """torch on a CPU: two passes side by side, each with its share of the threads (gate.py)."""
        if self.runtime is None and self.device == "cpu" and _TORCH_THREADS > 1:
            self.passes = 2
            self.shares_device = True

    def pass_threads(self, passes: int) -> None:
        if not self.shares_device:
            return
        n = max(1, _TORCH_THREADS // passes)
        if getattr(_pass_threads, "n", None) != n:  # per thread (OpenMP's and MKL's settings are)
            torch.set_num_threads(n)
            _pass_threads.n = n

    def _features(self, batch: Sequence[Tokens]) -> dict[str, Any]:
        arrays = self.tokenizer.pad(batch)
        features: dict[str, Any] = {
            k: torch.from_numpy(v).to(self.device) for k, v in arrays.items() if k in self._inputs
        }
        if batch[0].group:
            features["prompt_length"] = batch[0].group
        return features

    def _run(self, batch: Sequence[Tokens], output: str, **kwargs: Any) -> torch.Tensor:
        """The model's ``output`` for a batch: padded on torch; one input at a time, never padded,
        on the exported runtime (see ``runtimes``)."""
        if self.runtime is not None:
            return torch.from_numpy(self.runtime.run_each([self.tokenizer.pad([unit]) for unit in batch]))
        with torch.inference_mode():
            out: torch.Tensor = self.model(self._features(batch), **kwargs)[output]
            return out

    def _use_backend(self, entry: CatalogEntry, output: str) -> None:
        """For backend onnx/openvino: export (or reuse the cached export), load it, drop the torch weights."""
        spec = entry.spec
        if spec.backend == "torch":
            return
        from embedserve.engines import export
        from embedserve.engines.runtimes import load_runtime

        if getattr(self, "_prompt_excluded", False):
            raise ValueError(
                f"backend {spec.backend} cannot run this model: its pooling leaves the prompt out "
                "(include_prompt: false), which the export cannot follow; use backend torch"
            )
        inputs = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in self._inputs)
        revision = export.source_revision(export.source_directory(entry))
        key = export.ExportKey(spec.name, self.task, spec.backend, spec.quantize, revision, inputs)
        path = export.ExportCache().get_or_build(
            key, lambda dest: export.build_export(self.model, output, key, dest), f"model {entry.id}"
        )
        self.runtime = load_runtime(spec.backend, path, spec.threads, spec.streams)
        self.passes, self.shares_device = 1, False
        self.model.to("meta")  # the weights are no longer needed; the tokenizer and config stay
        gc.collect()

    def close(self) -> None:
        del self.model
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = None
        gc.collect()


class _BiEncoder(_STModel):
    """Shared loading of SentenceTransformer and SparseEncoder models."""

    def _setup(self, model: Any, entry: CatalogEntry) -> None:
        if entry.spec.max_length is not None:
            limit = _position_limit(model[0])
            if limit is not None and entry.spec.max_length > limit:
                raise ValueError(f"max_length {entry.spec.max_length} exceeds the model's {limit} positions")
            model.max_seq_length = entry.spec.max_length
        self._attach(model, int(model.max_seq_length or _position_limit(model[0]) or 512))
        self._prompt_excluded = any(getattr(m, "include_prompt", True) is False for m in model)

    def prompt_group(self, prompt: str | None) -> int:
        """The prompt's length in tokens (without a trailing special token) when pooling leaves it out."""
        if not prompt or not self._prompt_excluded:
            return 0
        ids = self.tokenizer.encode([prompt])[0].ids
        special = set(getattr(self.model.tokenizer, "all_special_ids", ()))
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

    def _embed(self, batch: Sequence[Tokens]) -> torch.Tensor:
        return self._run(batch, "sentence_embedding")


class STDenseEngine(_BiEncoder, DenseEngine):
    task = "dense"

    def __init__(self, entry: CatalogEntry) -> None:
        self._setup(SentenceTransformer(entry.source.location, **_load_kwargs(entry)), entry)
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self._use_backend(entry, "sentence_embedding")

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        return self._embed(batch).float().cpu().numpy()


class STSparseEngine(_BiEncoder, SparseEngine):
    task = "sparse"

    def __init__(self, entry: CatalogEntry) -> None:
        self._setup(SparseEncoder(entry.source.location, **_load_kwargs(entry)), entry)
        # the vocabulary, not the hidden size that get_embedding_dimension reports for MLM models
        config = getattr(self.model[0], "auto_model", None)
        self.dimension = int(getattr(getattr(config, "config", None), "vocab_size", 0) or len(self.model.tokenizer))
        self.max_active_dims: int | None = getattr(self.model, "max_active_dims", None)
        self._use_backend(entry, "sentence_embedding")

    def forward(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        kwargs = {} if self.max_active_dims is None else {"max_active_dims": self.max_active_dims}
        with torch.inference_mode():
            dense = self._run(batch, "sentence_embedding", **kwargs)
            if self.max_active_dims is not None:
                dense = select_max_active_dims(dense, max_active_dims=self.max_active_dims)
            rows = dense.float().cpu().numpy()
        out = []
        for row in rows:
            indices = np.flatnonzero(row)
            out.append(SparseVector(indices.astype(np.int64), row[indices].astype(np.float32)))
        return out


class CrossEncoderEngine(_STModel, RerankEngine):
    """A real reranker: the query and each document go through the model together."""

    task = "cross-encoder"

    def __init__(self, entry: CatalogEntry) -> None:
        kwargs = _load_kwargs(entry)
        if entry.spec.max_length is not None:
            kwargs["max_length"] = entry.spec.max_length
        model = CrossEncoder(entry.source.location, **kwargs)
        if model.num_labels != 1:
            raise ValueError(f"a reranker needs one output label; this model has {model.num_labels}")
        self._attach(model, int(model.max_seq_length or _position_limit(model[0]) or 512))
        self._use_backend(entry, "scores")
        if self.runtime is None and first_token_last_layer(model[0].auto_model, model.tokenizer):
            log.info("model %s: the last layer is computed for the first token only (all the head reads)", entry.id)

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        return RerankUnits(self.tokenizer.encode_pairs(query, documents, side, doc_limit), query_units=0)

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        """The logits; the activation is applied per request in :meth:`scores`."""
        logits = self._run(batch, "scores").float()
        out: FloatArray = logits.reshape(len(batch)).cpu().numpy()
        return out

    def scores(self, outputs: Any, query_units: int, raw: bool = False) -> FloatArray:
        logits = np.asarray(outputs, dtype=np.float32)
        if raw or self.model.activation_fn is None:
            return logits
        with torch.inference_mode():
            activated = self.model.activation_fn(torch.from_numpy(logits))
        return np.asarray(activated.numpy(), dtype=np.float32)


class SimilarityRerankEngine(_BiEncoder, TextEngine, RerankEngine):
    """Reranks with a bi-encoder: cosine of the query's and each document's embedding.

    Weaker than a cross-encoder, but it needs only a dense model. The catalogue's ``query``
    and ``document`` prompts, when defined, are used for the two sides. Units: the query,
    then each document, each embedded on its own.
    """

    task = "dense"

    def __init__(self, entry: CatalogEntry) -> None:
        self._setup(SentenceTransformer(entry.source.location, **_load_kwargs(entry)), entry)
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self._use_backend(entry, "sentence_embedding")
        self.query_prompt = entry.spec.prompts.get("query")
        self.document_prompt = entry.spec.prompts.get("document")

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        q = self.encode_texts([query], self.query_prompt, side)
        return RerankUnits(q + self.encode_texts(documents, self.document_prompt, side, doc_limit), query_units=1)

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        vectors = self._embed(batch).float()
        unit: FloatArray = torch.nn.functional.normalize(vectors, p=2, dim=1).cpu().numpy()
        return unit

    def scores(self, outputs: Any, query_units: int, raw: bool = False) -> FloatArray:
        vectors = np.asarray(outputs, dtype=np.float32)
        return np.asarray(vectors[query_units:] @ vectors[0], dtype=np.float32)

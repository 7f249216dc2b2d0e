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
    EngineOptions,
    FloatArray,
    RerankEngine,
    RerankUnits,
    SparseEngine,
    SparseVector,
    TextEngine,
)
from embedserve.engines.first_token import first_token_last_layer
from embedserve.engines.runtimes import Lanes
from embedserve.engines.tokenization import Side, TextTokenizer, Tokens, Windows
from embedserve.model_settings import ModelConfig, merge, purpose, similarity_scores

log = logging.getLogger(__name__)
NO_LIMIT = 10**9  # tokenizers with no model_max_length report transformers' VERY_LARGE_INTEGER
# torch's own intra-op threads (the physical cores, or what the process set before it loaded
# engines), the default of EngineOptions.torch_threads; read once at import, before any batch
# thread changed its own (torch.set_num_threads also changes what threads started later begin with)
_TORCH_DEFAULT_THREADS = torch.get_num_threads()
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
    device = resolve_device(spec.device) if spec.backend == "torch" else "cpu"
    kwargs: dict[str, Any] = {
        # onnx/openvino: the torch model is only exported (on the CPU), then dropped
        "device": device,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.dtype != "float32":
        if spec.dtype == "float16" and device == "cpu":
            raise ValueError("dtype: float16 needs a GPU and this machine has none; use bfloat16 on the CPU")
        kwargs["model_kwargs"] = {"dtype": getattr(torch, spec.dtype)}
    if spec.revision is not None and entry.source.kind == "hub":
        kwargs["revision"] = spec.revision
    return kwargs


def own_settings(model: Any) -> ModelConfig:
    """What sentence-transformers read from the model's files (``config_sentence_transformers.json``
    and the Transformer module's ``max_seq_length``); call before the catalogue changes any of it."""
    truncate_dim = getattr(model, "truncate_dim", None)
    return ModelConfig(
        prompts=dict(getattr(model, "prompts", None) or {}),
        default_prompt_name=getattr(model, "default_prompt_name", None),
        similarity_fn_name=getattr(model, "similarity_fn_name", None),  # the library's default where none
        truncate_dim=int(truncate_dim) if truncate_dim is not None else None,
        max_seq_length=_set_limit(getattr(model, "max_seq_length", None)),
    )


def _set_limit(value: Any) -> int | None:
    """A token limit, or ``None`` for transformers' stand-in for "none set" (a 1e30-sized integer)."""
    return int(value) if isinstance(value, int) and 0 < value < NO_LIMIT else None


def _token_limit(model: Any) -> int:
    """The model's ``max_seq_length`` (after the catalogue's ``max_length``), at most its positions."""
    limits = [x for x in (_set_limit(model.max_seq_length), _position_limit(model[0])) if x]
    return min(limits) if limits else 512


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
    own_settings: ModelConfig | None = None
    task: str  # what an export of it is: dense, sparse or cross-encoder
    export_variant = ""  # how the traced graph differs from the model's own (export.ExportKey.variant)
    options: EngineOptions

    @property
    def _threads(self) -> int:
        """torch's intra-op threads, shared by this engine's passes."""
        return self.options.torch_threads or _TORCH_DEFAULT_THREADS

    def _attach(self, model: Any, max_length: int) -> None:
        self.model = model
        self.model.eval()
        self.device = str(model.device)
        self.max_length = max_length
        self.tokenizer = TextTokenizer(model.tokenizer, max_length)
        names = getattr(model.tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"]
        self._inputs = {"input_ids", "attention_mask", *names} & {"input_ids", "attention_mask", "token_type_ids"}
        # On a CPU, long inputs run fastest a few at a time (measured here: 512-token rerank pairs
        # gave 14.2 pairs/s with 1,024 tokens a pass and 11.2 with 16,384), while 1,024 still lets
        # ~30 short queries share a pass; an accelerator wants big batches (the default).
        if self.device == "cpu":
            self.max_batch_tokens = 1024
        self._share_cpu()

    def _share_cpu(self) -> None:
        """torch on a CPU: two passes side by side, each with its share of the threads (gate.py)."""
        if self.runtime is None and self.device == "cpu" and self._threads > 1:
            self.passes = 2
            self.shares_device = True

    def pass_threads(self, passes: int) -> None:
        if self.runtime is not None:  # the pass's session: the wide one only alone on the device
            _pass_threads.passes = passes
            return
        if self.device != "cpu":
            return
        n = max(1, self._threads // passes)
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
            inputs = [self.tokenizer.pad([unit]) for unit in batch]
            # on a batch thread, the passes pass_threads saw; called directly, the batch over every lane
            passes: int | None = getattr(_pass_threads, "passes", None)
            rows = self.runtime.run_each(inputs) if passes is None else self.runtime.run_pass(inputs, passes)
            return torch.from_numpy(rows)
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
        key = export.ExportKey(spec.name, self.task, spec.backend, spec.quantize, revision, inputs, self.export_variant)
        path = export.ExportCache(self.options.cache_dir).get_or_build(
            key, lambda dest: export.build_export(self.model, output, key, dest), f"model {entry.id}"
        )
        self.runtime = load_runtime(spec.backend, path, spec.threads, spec.streams, quantize=spec.quantize)
        # ONNX Runtime and OpenVINO run each input alone (``runtimes``): nothing is padded, and
        # each stream is a batch thread of its own that takes a pass whenever its session is free,
        # taking one unit of the device's gate (with the threads of one stream), and runs the
        # pass's inputs one after another on its session. Up to 8 inputs a pass: each pass costs
        # its batch thread a turn through the queue and the event loop a wake-up for its results,
        # and 8 served 1.15-1.2x the queries a second of 1 at 32 concurrent one-text requests here
        # (2 cores, all-MiniLM-L6-v2 int8). The token bound keeps a pass of long inputs short.
        self.passes, self.shares_device = self.runtime.streams, self.runtime.streams > 1
        self.is_padded, self.max_batch_size, self.max_batch_tokens = False, 8, 8192
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
        self.own_settings = own_settings(model)
        if entry.spec.max_length is not None:
            limit = _position_limit(model[0])
            if limit is not None and entry.spec.max_length > limit:
                raise ValueError(f"max_length {entry.spec.max_length} exceeds the model's {limit} positions")
            model.max_seq_length = entry.spec.max_length
        self._attach(model, _token_limit(model))
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

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self._setup(SentenceTransformer(entry.source.location, **_load_kwargs(entry)), entry)
        self.dimension = _full_width(self.model)
        self._use_backend(entry, "sentence_embedding")

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        """The full width: a default or requested ``dimensions`` is cut per request (``tasks``)."""
        return self._embed(batch).float().cpu().numpy()


def _full_width(model: Any) -> int:
    """The width of the model's output (its ``truncate_dim`` is applied per request, not here)."""
    with model.truncate_embeddings(None):
        return int(model.get_embedding_dimension() or 0)


class STSparseEngine(_BiEncoder, SparseEngine):
    task = "sparse"

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self._setup(SparseEncoder(entry.source.location, **_load_kwargs(entry)), entry)
        # the vocabulary, not the hidden size that get_embedding_dimension reports for MLM models
        config = getattr(self.model[0], "auto_model", None)
        self.dimension = int(getattr(getattr(config, "config", None), "vocab_size", 0) or len(self.model.tokenizer))
        self.max_active_dims: int | None = getattr(self.model, "max_active_dims", None)
        self._use_backend(entry, "sentence_embedding")

    def forward(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        kwargs = {} if self.max_active_dims is None else {"max_active_dims": self.max_active_dims}
        with torch.inference_mode():
            return sparse_vectors(self._run(batch, "sentence_embedding", **kwargs), self.max_active_dims)


def sparse_vectors(dense: torch.Tensor, max_active_dims: int | None) -> list[SparseVector]:
    """A SPLADE pass's dense rows as sparse vectors, cut to the model's ``max_active_dims`` as
    ``SparseEncoder.encode`` cuts them."""
    if max_active_dims is not None:
        dense = select_max_active_dims(dense, max_active_dims=max_active_dims)
    rows = dense.float().cpu().numpy()
    out = []
    for row in rows:
        indices = np.flatnonzero(row)
        out.append(SparseVector(indices.astype(np.int64), row[indices].astype(np.float32)))
    return out


class CrossEncoderEngine(_STModel, RerankEngine):
    """A real reranker: the query and each document go through the model together."""

    task = "cross-encoder"

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        kwargs = _load_kwargs(entry)
        if entry.spec.max_length is not None:
            kwargs["max_length"] = entry.spec.max_length
        model = CrossEncoder(entry.source.location, **kwargs)
        self.own_settings = own_settings(model)
        # CrossEncoder.predict puts the default prompt before the first text of each pair
        self.query_prompt = merge(entry.spec, self.own_settings).resolve(None, None) or ""
        if model.num_labels != 1:
            raise ValueError(f"a reranker needs one output label; this model has {model.num_labels}")
        self._attach(model, _token_limit(model))
        # Before the export, so that the exports trace it too (their cache key says so: ``variant``).
        if first_token_last_layer(model[0].auto_model, model.tokenizer):
            self.export_variant = "first-token-last-layer"
            log.info("model %s: the last layer is computed for the first token only (all the head reads)", entry.id)
        self._use_backend(entry, "scores")

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        pairs = self.tokenizer.encode_pairs(self.query_prompt + query, documents, side, doc_limit)
        return RerankUnits(pairs, query_units=0)

    def window_pairs(
        self, query: str, documents: Sequence[str], overlap: int, doc_limit: int | None = None
    ) -> tuple[list[Tokens], list[Windows]]:
        return [], self.tokenizer.pair_windows(self.query_prompt + query, documents, overlap, doc_limit)

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
    """Reranks with a bi-encoder: the model's similarity function (``similarity_fn_name``, cosine
    unless the model says otherwise) of the query's and each document's embedding.

    Weaker than a cross-encoder, but it needs only a dense model. The query and document sides
    take the model's prompts for those purposes (catalogue and model merged, see
    ``model_settings``), cut to its default ``dimensions``, as ``encode_query`` and
    ``encode_document`` would. Units: the query, then each document, each embedded on its own.
    """

    task = "dense"

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()
        self._setup(SentenceTransformer(entry.source.location, **_load_kwargs(entry)), entry)
        self.dimension = _full_width(self.model)
        self._use_backend(entry, "sentence_embedding")
        settings = merge(entry.spec, self.own_settings, self.dimension)
        self.query_prompt = settings.resolve(None, settings.prompt_name_for(purpose(of="query")))
        self.document_prompt = settings.resolve(None, settings.prompt_name_for(purpose(of="document")))
        self.similarity = settings.similarity or "cosine"
        self.width = settings.dimensions or self.dimension

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        q = self.encode_texts([query], self.query_prompt, side)
        return RerankUnits(q + self.encode_texts(documents, self.document_prompt, side, doc_limit), query_units=1)

    def embedding_prompts(self) -> tuple[str | None, str | None]:
        return self.query_prompt, self.document_prompt

    def window_pairs(
        self, query: str, documents: Sequence[str], overlap: int, doc_limit: int | None = None
    ) -> tuple[list[Tokens], list[Windows]]:
        group = self.prompt_group(self.document_prompt)
        windows = self.tokenizer.windows(documents, self.document_prompt, overlap, group=group, keep=doc_limit)
        return self.encode_texts([query], self.query_prompt), windows

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        out: FloatArray = self._embed(batch).float().cpu().numpy()
        return out

    def scores(self, outputs: Any, query_units: int, raw: bool = False) -> FloatArray:
        vectors = np.asarray(outputs, dtype=np.float32)[:, : self.width]
        return similarity_scores(self.similarity, vectors[0], vectors[query_units:])

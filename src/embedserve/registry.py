"""The catalogue made live: one :class:`ModelHandle` per model, with its state and batcher.

:class:`ModelHandle` is what the app, ``tasks`` and the metrics ask of a model; it has two
implementations: :class:`LocalModelHandle` (the model in this process) and
``deploy.remote.RemoteModelHandle`` (the model in Ray replicas). A request reaches a model in
two steps: :meth:`ModelHandle.tokenize` (on the shared tokenizer threads of ``tokenizer_pool``:
fair between requests, bounded, within the deadline; first admitted by the batcher, which refuses
a request that could not be computed before its deadline (``admission``) and has a short queue
wait for the ones it admits) and :meth:`ModelHandle.submit` (the model's batch
queue). Loading runs in a thread of its own.

States: ``not_loaded`` (lazy: loads on first use) → ``loading`` → ``ready`` or ``failed``
(with its reason); ``unload`` makes a ready model ``unloaded``, which refuses requests (503)
until it is loaded again. A model that fails to load never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from embedserve import context
from embedserve.batching import Batcher, BatchLimits, Observer
from embedserve.catalog import Catalog, CatalogEntry
from embedserve.engines.base import Engine, Tokens
from embedserve.engines.multi_vector import MultiTaskEngine
from embedserve.engines.runtimes import default_threads
from embedserve.errors import EmbedServeError, InferenceFailed, ModelNotFound, ModelUnavailable, WrongModelType
from embedserve.families import Family
from embedserve.families import detect as detect_family
from embedserve.gate import DeviceGate
from embedserve.memory import settle_heap
from embedserve.model_settings import ModelSettings, merge
from embedserve.priority import run_niced
from embedserve.tokenizer_pool import INLINE_CHARS, TokenizerPool, chunks

if TYPE_CHECKING:
    from embedserve.cache import EmbeddingCache

log = logging.getLogger(__name__)
T = TypeVar("T")
HYBRID_TYPES = ("embeddings", "sparse-embeddings", "multi-vector")
EngineFactory = Callable[[CatalogEntry], Engine]
ObserverFactory = Callable[[str], Observer]  # model id → what its batch thread reports each pass to


class ModelState(str, Enum):
    """A model's state; the one list of them (``/metrics``, the API schemas and the Ray ingress use it)."""

    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


class ModelHandle(Protocol):
    """One catalogue model as the app, ``tasks`` and the metrics see it."""

    entry: CatalogEntry
    id: str
    state: ModelState
    error: str | None  # why it failed to load
    load_seconds: float | None
    cache: EmbeddingCache | None  # the embedding cache ``tasks`` look its inputs up in (set by the registry)

    @property
    def queue_depth(self) -> int:
        """Inputs queued for the model now."""

    async def load(self, *, settle: bool = True) -> None:
        """Load the model unless it is ready (``settle``: give freed memory back after)."""

    async def unload(self) -> None:
        """Free the weights; requests get 503 until the model is loaded again."""

    async def ready_engine(self) -> Engine:
        """The engine for a request: loads a lazy model, waits for one loading, else 503."""

    def settings(self, engine: Engine | None = None) -> ModelSettings:
        """The catalogue entry merged with the model's own settings (see ``model_settings``)."""

    async def model_settings(self) -> ModelSettings:
        """:meth:`settings` of the ready engine (loads a lazy model; 503 if it cannot be)."""

    async def tokenize(self, fn: Callable[[], T], chars: int = 1, *, compute: bool = True, texts: int = 1) -> T:
        """Run ``fn`` (the engine's tokenization of ``chars`` characters) off the event loop, in its
        fair turn and within the request's deadline. ``compute``: the model computes what it gives
        (False for ``/tokenize`` and ``/decode``: no admission by the model's wait)."""

    async def tokenize_texts(
        self, texts: Sequence[str], encode: Callable[[list[str]], list[T]], prefix_chars: int = 0
    ) -> list[T]:
        """``encode`` of all ``texts`` (each with a prefix of ``prefix_chars``), in turns with other requests."""

    async def submit(self, units: Sequence[Tokens]) -> list[Any]:
        """The units' forward outputs, one per unit, in order, from the model's batcher."""

    def info(self) -> dict[str, Any]:
        """The model as ``/api/v1/models`` lists it."""

    async def close(self) -> None:
        """At shutdown: stop its batcher and free its engine."""


HandleFactory = Callable[[CatalogEntry], ModelHandle]


def _nothing() -> None:
    """What a weak reference to an engine gives once it is gone (and stands for no engine)."""


def merged_settings(entry: CatalogEntry, engine: Engine | None) -> ModelSettings:
    """The catalogue entry merged with ``engine``'s own settings (the catalogue's alone without one)."""
    own = engine.own_settings if engine is not None else None
    return merge(entry.spec, own, engine.dimension if engine is not None else None)


class LocalModelHandle:
    """One catalogue model in this process: its state, its engine once loaded, and its batcher."""

    def __init__(
        self,
        entry: CatalogEntry,
        factory: EngineFactory,
        tokenizer_pool: TokenizerPool,
        device_gate: Callable[[str], DeviceGate],
        observer: Observer | None = None,
        compute_nice: int = 0,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        """``compute_nice``: the nice increment of the threads that load the model and run its
        passes (priority.py); ``alone``: whether the server has no request in progress but the one
        asking (the batcher may then run a lone short input on the event loop, batching.py)."""
        self.entry = entry
        self._compute_nice = compute_nice
        self._alone = alone
        self.id = entry.id
        self._factory = factory
        self._observer = observer
        self._tokenizer_pool = tokenizer_pool
        self._device_gate = device_gate
        self.state = ModelState.NOT_LOADED
        self.error: str | None = None
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.load_seconds: float | None = None
        self.cache: EmbeddingCache | None = None
        self._loading: asyncio.Task[None] | None = None
        self._family: tuple[Family | None] | None = None  # (detected,) once read
        # the entry, engine and engine's own settings last merged, and the result
        self._settings: tuple[CatalogEntry, Callable[[], Engine | None], object, ModelSettings] | None = None

    @property
    def family(self) -> Family | None:
        """The model's family (families.py), read from its files once; None when they are not here."""
        if self._family is None:
            self._family = (detect_family(self.entry),)
        return self._family[0]

    async def load(self, *, settle: bool = True) -> None:
        """Load the model unless it is ready; concurrent calls share one load. ``settle``: settle
        the heap after (:func:`~embedserve.memory.settle_heap`); start-up settles once after all."""
        if self.state is ModelState.READY:
            return
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._load(settle))
        await asyncio.shield(self._loading)

    async def _load(self, settle: bool) -> None:
        self.state, self.error = ModelState.LOADING, None
        log.info("model %s: loading %s (%s)", self.id, self.entry.spec.name, self.entry.source.describe())
        started = time.perf_counter()
        try:
            engine = await run_niced(self._compute_nice, self._factory, self.entry)
        except Exception as exc:
            self.state, self.error = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            log.error("model %s: failed to load: %s", self.id, self.error)
            return
        try:
            self.settings(engine)  # the catalogue's default prompt and dimensions must fit this model
        except ValueError as exc:
            await asyncio.to_thread(engine.close)
            self.state, self.error = ModelState.FAILED, f"ValueError: {exc}"
            log.error("model %s: failed to load: %s", self.id, self.error)
            return
        spec = self.entry.spec.batching
        limits = BatchLimits(  # the catalogue's, else what the engine declares
            max_batch_size=spec.max_batch_size or engine.max_batch_size,
            max_batch_tokens=spec.max_batch_tokens or engine.max_batch_tokens,
            max_wait_ms=spec.max_wait_ms,
            max_queue=spec.max_queue,
            passes=spec.passes or engine.passes,
        )
        self.engine = engine
        gate = self._device_gate(engine.device)
        self.batcher = Batcher(
            self.id,
            engine.forward,
            limits,
            gate,
            self._observer,
            weight=1 if engine.shares_device else gate.capacity,
            prepare=engine.pass_threads,
            padded=engine.is_padded,
            nice=self._compute_nice,
            alone=self._alone,
        )
        if settle:
            settle_heap()
        self.load_seconds = time.perf_counter() - started
        self.state = ModelState.READY
        log.info("model %s: ready in %.1f s on %s", self.id, self.load_seconds, engine.device)

    async def unload(self) -> None:
        """Free the weights; requests get 503 until the model is loaded again."""
        if self._loading is not None and not self._loading.done():
            await asyncio.shield(self._loading)
        engine, self.engine = self.engine, None
        batcher, self.batcher = self.batcher, None
        self.state, self.error = ModelState.UNLOADED, None
        if batcher is not None:
            await asyncio.to_thread(batcher.close)  # waits for a pass still running
        if engine is not None:
            await asyncio.to_thread(engine.close)
        del engine, batcher
        settle_heap()  # the model's garbage cycles were frozen with it
        log.info("model %s: unloaded", self.id)

    async def ready_engine(self) -> Engine:
        """The engine for a request: loads a lazy model, waits for one loading, else 503."""
        if self.state in (ModelState.NOT_LOADED, ModelState.LOADING):
            await self.load()
        if self.state is ModelState.READY and self.engine is not None:
            return self.engine
        if self.state is ModelState.FAILED:
            raise ModelUnavailable(f"model '{self.id}' failed to load: {self.error}", param="model")
        raise ModelUnavailable(
            f"model '{self.id}' is unloaded; load it with POST /api/v1/models/{self.id}/load", param="model"
        )

    def settings(self, engine: Engine | None = None) -> ModelSettings:
        """The catalogue entry merged with the model's own settings (those of ``engine``, else of the
        loaded engine; before the first load, the catalogue's alone). See ``model_settings``.
        Merged once for each entry, engine and engine's own settings: every request asks."""
        engine = engine or self.engine
        own = engine.own_settings if engine is not None else None
        cached = self._settings
        if cached is not None and cached[0] is self.entry and cached[1]() is engine and cached[2] is own:
            return cached[3]
        merged = merged_settings(self.entry, engine)
        # the engine weakly: an unloaded engine (and its weights) must not be kept alive by this
        self._settings = (self.entry, weakref.ref(engine) if engine is not None else _nothing, own, merged)
        return merged

    async def model_settings(self) -> ModelSettings:
        """:meth:`settings` of the ready engine (loads a lazy model; 503 if it cannot be)."""
        return self.settings(await self.ready_engine())

    async def tokenize(self, fn: Callable[[], T], chars: int = 1, *, compute: bool = True, texts: int = 1) -> T:
        """Run ``fn`` (the engine's tokenization of ``chars`` characters in ``texts`` texts or pairs)
        on a tokenizer thread, in its fair turn and within the request's deadline; with ``compute``,
        first admitted by the batcher (429 when the model cannot compute it in time) and announced
        to it."""
        batcher = await self._batcher()
        ctx = context.current.get()
        deadline = ctx.deadline if ctx is not None else None
        started = time.perf_counter()
        try:
            announced = (
                batcher.incoming(chars, deadline, texts=texts, cap=self._max_tokens())
                if compute
                else contextlib.nullcontext()
            )
            with announced, self._tokenizer_pool.admit(chars, self.id):
                out = await self._tokenizer_pool.run(partial(_guarded, self.id, fn), chars, deadline, self.id)
            if compute:
                batcher.estimator.observe_tokenized(chars, _tokens_of(out, original=True))
            return out
        finally:
            if ctx is not None:
                ctx.tokenization += time.perf_counter() - started

    async def tokenize_texts(
        self, texts: Sequence[str], encode: Callable[[list[str]], list[T]], prefix_chars: int = 0
    ) -> list[T]:
        """``encode`` (the engine's tokenization of a list of texts, each with a prefix of
        ``prefix_chars``) of every text, in jobs of about ``CHUNK_CHARS`` characters, so that a
        long request takes turns with the others rather than holding a tokenizer thread."""
        batcher = await self._batcher()
        ctx = context.current.get()
        deadline = ctx.deadline if ctx is not None else None
        total = sum(map(len, texts)) + prefix_chars * len(texts)
        started = time.perf_counter()
        out: list[T] = []
        try:
            announced = batcher.incoming(total, deadline, texts=len(texts), cap=self._max_tokens())
            with announced, self._tokenizer_pool.admit(total, self.id):
                for chunk in chunks(list(texts)):
                    job = partial(_guarded, self.id, partial(encode, chunk))
                    cost = sum(map(len, chunk)) + prefix_chars * len(chunk)
                    out += await self._tokenizer_pool.run(job, cost, deadline, self.id)
            batcher.estimator.observe_tokenized(total, _tokens_of(out, original=True))
            return out
        finally:
            if ctx is not None:
                ctx.tokenization += time.perf_counter() - started

    async def submit(self, units: Sequence[Tokens]) -> list[Any]:
        """Queue the units for the model's forward passes; one output per unit, in order. The
        request's deadline, if it has one, bounds the wait (503 after it)."""
        return await (await self._batcher()).submit(units, context.current.get())

    def _max_tokens(self) -> int | None:
        """The tokens the model reads of one text or pair (what admission counts a text as at most)."""
        return self.engine.max_length if self.engine is not None else None

    async def _batcher(self) -> Batcher:
        if self.batcher is None:
            await self.ready_engine()  # loads a lazy model; 503 for an unloaded or failed one
        if self.batcher is None:
            raise ModelUnavailable(f"model '{self.id}' was unloaded while this request waited", param="model")
        return self.batcher

    @property
    def queue_depth(self) -> int:
        return self.batcher.queue_depth if self.batcher is not None else 0

    def info(self) -> dict[str, Any]:
        return describe(self.entry, self.state, self.error, self.engine, self.batcher, self.load_seconds, self.family)

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            await asyncio.to_thread(batcher.close)  # waits for a pass still running
        if engine is not None:
            engine.close()


def describe(
    entry: CatalogEntry,
    state: ModelState,
    error: str | None,
    engine: Engine | None = None,
    batcher: Batcher | None = None,
    load_seconds: float | None = None,
    family: Family | None = None,
) -> dict[str, Any]:
    """A model as ``/api/v1/models`` lists it; before a load, from the catalogue alone."""
    spec = entry.spec
    try:
        settings = merged_settings(entry, engine)
    except ValueError:  # a model that failed to load for it: the catalogue's alone
        settings = merge(spec, None)
    return {
        "id": entry.id,
        "name": spec.name,
        "type": spec.type,
        "serves": list(spec.serves),
        "family": family.name if family else None,
        "engine": spec.engine_name,
        "backend": spec.backend,
        "quantize": spec.quantize,
        "dtype": spec.dtype,
        "source": entry.source.kind,
        "loaded": state is ModelState.READY,
        "state": state.value,
        "error": error,
        "device": engine.device if engine else spec.device,
        "dimension": (settings.dimensions or engine.dimension) if engine else spec.dimensions,
        "max_dimension": engine.dimension if engine else None,
        "dimensions_origin": settings.dimensions_origin,
        "max_length": engine.max_length if engine else spec.max_length,
        "max_length_origin": "catalogue" if spec.max_length is not None else ("model" if engine else None),
        "similarity": settings.similarity,
        "prompts": sorted(settings.prompts),
        "prompt_texts": settings.describe(),
        "default_prompt": settings.default_prompt,
        "default_prompt_origin": settings.default_prompt_origin,
        "settings_read": settings.known,
        "preload": spec.preload,
        "trust_remote_code": spec.trust_remote_code,
        "description": spec.description,
        "default": spec.default,
        # before the load, the catalogue's limits: the engine fills in the rest when it loads
        "batching": asdict(batcher.limits) if batcher else spec.batching.model_dump(),
        "stats": batcher.stats() if batcher else {"queue_depth": 0, "batches": 0, "inputs_computed": 0},
        "load_seconds": None if load_seconds is None else round(load_seconds, 3),
    }


class FusionHandle:
    """A reranker of engine ``fusion``: it loads nothing and scores with the handles of the
    catalogue's dense and sparse models named in its ``fuse`` (their weights, batch queues and
    exports are shared, Ray deployments included; see ``tasks.rerank`` and ``fusion``).

    It is ready when both are; loading it loads them. Unloading it only refuses its own requests
    (503) until it is loaded again: the two models go on serving their own routes.
    """

    def __init__(self, entry: CatalogEntry, dense: ModelHandle | None, sparse: ModelHandle | None) -> None:
        self.entry = entry
        self.id = entry.id
        self._dense, self._sparse = dense, sparse
        self._unloaded = False
        self.load_seconds: float | None = None
        self.cache: EmbeddingCache | None = None  # unused: its two models look their inputs up in theirs

    @property
    def dense(self) -> ModelHandle:
        assert self._dense is not None, "set by the registry"
        return self._dense

    @dense.setter
    def dense(self, handle: ModelHandle) -> None:
        self._dense = handle

    @property
    def sparse(self) -> ModelHandle:
        assert self._sparse is not None, "set by the registry"
        return self._sparse

    @sparse.setter
    def sparse(self, handle: ModelHandle) -> None:
        self._sparse = handle

    @property
    def state(self) -> ModelState:
        """Derived from the two models' states (and this handle's own unload)."""
        if self._unloaded:
            return ModelState.UNLOADED
        states = {self.dense.state, self.sparse.state}
        for state in (ModelState.FAILED, ModelState.LOADING, ModelState.UNLOADED, ModelState.NOT_LOADED):
            if state in states:
                return state
        return ModelState.READY

    @state.setter
    def state(self, value: ModelState) -> None:
        pass  # the protocol's attribute: this one's state is its models'

    @property
    def error(self) -> str | None:
        failed = [h for h in (self.dense, self.sparse) if h.state is ModelState.FAILED]
        return "; ".join(f"model '{h.id}' failed to load: {h.error}" for h in failed) or None

    @error.setter
    def error(self, value: str | None) -> None:
        pass

    @property
    def queue_depth(self) -> int:
        return 0  # its inputs queue at its two models

    async def load(self, *, settle: bool = True) -> None:
        self._unloaded = False
        await asyncio.gather(self.dense.load(settle=settle), self.sparse.load(settle=settle))

    async def unload(self) -> None:
        self._unloaded = True
        log.info("model %s: unloaded (its models %s and %s stay loaded)", self.id, self.dense.id, self.sparse.id)

    async def ready_engine(self) -> Engine:
        """The dense model's engine (its tokenizer serves this id's tokenize and decode), once
        both models are ready; 503 while this handle is unloaded or either model failed."""
        if self._unloaded:
            raise ModelUnavailable(
                f"model '{self.id}' is unloaded; load it with POST /api/v1/models/{self.id}/load", param="model"
            )
        engine, _ = await asyncio.gather(self.dense.ready_engine(), self.sparse.ready_engine())
        return engine

    def settings(self, engine: Engine | None = None) -> ModelSettings:
        return merge(self.entry.spec, None)

    async def model_settings(self) -> ModelSettings:
        return self.settings()

    async def tokenize(self, fn: Callable[[], T], chars: int = 1, *, compute: bool = True, texts: int = 1) -> T:
        raise RuntimeError(f"model '{self.id}' tokenizes through its dense and sparse models. This is a bug.")

    async def tokenize_texts(
        self, texts: Sequence[str], encode: Callable[[list[str]], list[T]], prefix_chars: int = 0
    ) -> list[T]:
        raise RuntimeError(f"model '{self.id}' tokenizes through its dense and sparse models. This is a bug.")

    async def submit(self, units: Sequence[Tokens]) -> list[Any]:
        raise RuntimeError(f"model '{self.id}' computes through its dense and sparse models. This is a bug.")

    def info(self) -> dict[str, Any]:
        info = describe(self.entry, self.state, self.error)
        dense = self.dense.info()
        for key in ("device", "max_length", "backend", "quantize"):
            info[key] = dense.get(key)
        info["fuse"] = self.entry.spec.fuse.model_dump() if self.entry.spec.fuse else None
        return info

    async def close(self) -> None:
        pass  # its models close themselves


class Registry:
    """All catalogue models by id; lookup by id and task, start-up preload, shutdown."""

    def __init__(
        self,
        catalog: Catalog,
        factory: EngineFactory | None = None,
        *,
        tokenizer_threads: int = 1,
        tokenizer_queue_chars: int = 64 * 1024 * 1024,
        observer: ObserverFactory | None = None,
        handles: HandleFactory | None = None,
        compute_nice: int = 0,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        """``factory`` makes the engines of the in-process handles; ``handles`` replaces those
        handles (``deploy/``: models in Ray replicas); ``compute_nice``: how much lower than the
        server's own threads the in-process models load and run their passes (priority.py);
        ``alone``: whether the server has no request in progress but the one asking (batching.py)."""
        if factory is None:
            from embedserve.engines import create_engine

            factory = create_engine
        self.catalog = catalog
        self._tokenizer_pool = TokenizerPool(tokenizer_threads, tokenizer_queue_chars, INLINE_CHARS)
        self._device_gates: dict[str, DeviceGate] = {}

        def local(entry: CatalogEntry) -> ModelHandle:
            observed = observer(entry.id) if observer is not None else None
            return LocalModelHandle(
                entry, factory, self._tokenizer_pool, self.device_gate, observed, compute_nice, alone
            )

        make = handles or local
        self.models: dict[str, ModelHandle] = {}
        for entry in catalog.entries.values():  # in catalogue order; a fusion reranker after its models
            fuse = entry.spec.fuse
            self.models[entry.id] = make(entry) if fuse is None else FusionHandle(entry, None, None)
        for handle in self.models.values():
            if isinstance(handle, FusionHandle) and handle.entry.spec.fuse is not None:
                handle.dense = self.models[handle.entry.spec.fuse.dense]
                handle.sparse = self.models[handle.entry.spec.fuse.sparse]
        self.startup_complete = False
        self.preloaded: list[str] = []  # the models /ready waits for
        self._preload: asyncio.Task[None] | None = None

    def use_cache(self, cache: EmbeddingCache | None) -> None:
        """Look the inputs of every model up in ``cache`` (None: compute every input)."""
        for handle in self.models.values():
            if not isinstance(handle, FusionHandle):
                handle.cache = cache

    def start(self, *, lazy: bool) -> None:
        """Preload (in the background, in catalogue order) every model marked ``preload``."""
        wanted = [] if lazy else [m for m in self.models.values() if m.entry.spec.preload]
        self.preloaded = [m.id for m in wanted]
        self._preload = asyncio.create_task(self._preload_all(wanted))

    async def _preload_all(self, handles: list[ModelHandle]) -> None:
        for handle in handles:
            await handle.load(settle=False)
        settle_heap()
        self.startup_complete = True

    async def wait_started(self) -> None:
        if self._preload is not None:
            await asyncio.shield(self._preload)

    def device_gate(self, device: str) -> DeviceGate:
        """One gate per device, across models (gate.py): as many units as cores on a CPU, 1 else."""
        if device not in self._device_gates:
            self._device_gates[device] = DeviceGate(default_threads() if device == "cpu" else 1)
        return self._device_gates[device]

    def get(self, model_id: str) -> ModelHandle:
        try:
            handle = self.models[model_id]
        except KeyError:
            raise ModelNotFound(model_id, self.models, param=None) from None
        context.note_model(handle.id)
        return handle

    def _for_task(self, model_id: str | None, model_type: str) -> ModelHandle:
        if model_id is None:
            default = self.catalog.default_id(model_type)
            if default is None:
                raise ModelNotFound(f"(default {model_type} model)", self.models)
            context.note_model(default)
            return self.models[default]
        found = self.models.get(model_id)
        if found is None:
            raise ModelNotFound(model_id, self.models)
        handle = found
        context.note_model(handle.id)
        if model_type not in handle.entry.spec.serves:
            same = [m.id for m in self.models.values() if model_type in m.entry.spec.serves]
            raise WrongModelType(
                f"model '{model_id}' is of type {handle.entry.spec.type}; this endpoint needs a model of type "
                f"{model_type}: {', '.join(same) or '(none in the catalogue)'}",
                param="model",
            )
        return handle

    def for_task(self, model_id: str | None, model_type: str) -> ModelHandle:
        """The model a request names (or the default of ``model_type``), checked to serve that type;
        a model that serves several types comes as a :class:`TaskView` of ``model_type``."""
        handle = self._for_task(model_id, model_type)
        if len(handle.entry.spec.serves) > 1:
            return TaskView(handle, model_type)
        return handle

    def for_hybrid(self, model_id: str | None) -> ModelHandle:
        """A model that gives dense, sparse and multi-vector outputs from one pass (``bge-m3``),
        named or the first in the catalogue, as its ``hybrid`` view."""
        hybrid = [m.id for m in self.models.values() if set(HYBRID_TYPES) <= set(m.entry.spec.serves)]
        if model_id is None:
            if not hybrid:
                raise ModelNotFound("(a bge-m3 model)", self.models)
            model_id = hybrid[0]
        handle = self.models.get(model_id)
        if handle is None:
            raise ModelNotFound(model_id, self.models)
        context.note_model(handle.id)
        if model_id not in hybrid:
            raise WrongModelType(
                f"model '{model_id}' (engine {handle.entry.spec.engine_name}) gives one output type; this endpoint "
                f"needs a model that gives dense, sparse and multi-vector outputs (engine bge-m3): "
                f"{', '.join(hybrid) or '(none in the catalogue)'}",
                param="model",
            )
        return TaskView(handle, "hybrid")

    def health(self) -> dict[str, Any]:
        states = [m.state for m in self.models.values()]
        failed = [m.id for m in self.models.values() if m.state is ModelState.FAILED]
        return {
            "status": "degraded" if failed else "healthy",
            "total_models": len(states),
            "loaded_models": sum(s is ModelState.READY for s in states),
            "startup_complete": self.startup_complete,
            "failed_models": failed,
        }

    def readiness(self) -> dict[str, Any]:
        """``ready`` once every preloaded model is ready; ``degraded`` when one failed (with its
        reason), ``loading`` while one is still on its way, ``not_ready`` otherwise."""
        waited = [self.models[i] for i in self.preloaded]
        states = {m.state for m in waited}
        if ModelState.FAILED in states:
            status = "degraded"
        elif states <= {ModelState.READY} and self.startup_complete:
            status = "ready"
        elif states & {ModelState.LOADING, ModelState.NOT_LOADED}:
            status = "loading"
        else:
            status = "not_ready"
        models = {
            m.id: {"state": m.state.value, "error": m.error, "preload": m.id in self.preloaded}
            for m in self.models.values()
        }
        return {"status": status, "ready": status == "ready", "models": models}

    async def close(self) -> None:
        if self._preload is not None and not self._preload.done():
            self._preload.cancel()
        for handle in self.models.values():
            await handle.close()
        self._tokenizer_pool.close()


class TaskView:
    """A model that serves several types (``bge-m3``) seen as one of them, so ``tasks`` use it as
    they use any model of that type: its engine is the model's view for the type
    (:meth:`MultiTaskEngine.view`) and each output of the shared batcher is narrowed to the
    type's part (:meth:`MultiTaskEngine.pick`). State, loading and the batcher stay the model's:
    one loaded copy and one queue, whatever route a request came by."""

    def __init__(self, handle: ModelHandle, task: str) -> None:
        self._handle = handle
        self.task = task
        self.entry = handle.entry
        self.id = handle.id

    @property
    def state(self) -> ModelState:
        return self._handle.state

    @state.setter
    def state(self, value: ModelState) -> None:
        self._handle.state = value

    @property
    def error(self) -> str | None:
        return self._handle.error

    @error.setter
    def error(self, value: str | None) -> None:
        self._handle.error = value

    @property
    def load_seconds(self) -> float | None:
        return self._handle.load_seconds

    @load_seconds.setter
    def load_seconds(self, value: float | None) -> None:
        self._handle.load_seconds = value

    @property
    def cache(self) -> EmbeddingCache | None:
        return self._handle.cache

    @cache.setter
    def cache(self, value: EmbeddingCache | None) -> None:
        self._handle.cache = value

    @property
    def queue_depth(self) -> int:
        return self._handle.queue_depth

    async def _multi(self) -> MultiTaskEngine:
        engine = await self._handle.ready_engine()
        if not isinstance(engine, MultiTaskEngine):
            raise TypeError(f"model {self.id}: engine {type(engine).__name__} serves one type. This is a bug.")
        return engine

    async def load(self, *, settle: bool = True) -> None:
        await self._handle.load(settle=settle)

    async def unload(self) -> None:
        await self._handle.unload()

    async def ready_engine(self) -> Engine:
        return (await self._multi()).view(self.task)

    def settings(self, engine: Engine | None = None) -> ModelSettings:
        return self._handle.settings(engine)

    async def model_settings(self) -> ModelSettings:
        return self.settings(await self.ready_engine())

    async def tokenize(self, fn: Callable[[], T], chars: int = 1, *, compute: bool = True, texts: int = 1) -> T:
        return await self._handle.tokenize(fn, chars, compute=compute, texts=texts)

    async def tokenize_texts(
        self, texts: Sequence[str], encode: Callable[[list[str]], list[T]], prefix_chars: int = 0
    ) -> list[T]:
        return await self._handle.tokenize_texts(texts, encode, prefix_chars)

    async def submit(self, units: Sequence[Tokens]) -> list[Any]:
        engine = await self._multi()
        return engine.pick(self.task, await self._handle.submit(units))

    def info(self) -> dict[str, Any]:
        return self._handle.info()

    async def close(self) -> None:
        """The model is closed by the registry, not through a view of it."""


def _tokens_of(out: object, *, original: bool = False) -> int:
    """The model work in a tokenization's result: its units' tokens (0 when it is not model work);
    ``original``: the tokens before truncation (what the characters made)."""
    units = getattr(out, "units", out)
    if not isinstance(units, list):
        return 0
    return sum(u.original if original else u.cost for u in units if isinstance(u, Tokens))


def _guarded(model_id: str, fn: Callable[[], T]) -> T:
    """Domain errors as they are; anything else logged and answered with a generic 500."""
    try:
        return fn()
    except EmbedServeError:
        raise
    except Exception as exc:
        log.exception("model %s: tokenization failed", model_id)
        raise InferenceFailed(f"model '{model_id}' failed to tokenize this request") from exc

"""The ingress side of a Ray deployment: a registry whose models live in other processes.

:class:`RayRegistry` is a :class:`~embedserve.registry.Registry` whose handles are
:class:`RemoteModelHandle` s, the Ray implementation of the
:class:`~embedserve.registry.ModelHandle` protocol, so the HTTP app and ``tasks`` run
unchanged: the seam is the handle. Where an in-process handle tokenizes on its thread pool and queues units
for its batcher, a :class:`RemoteModelHandle` asks the model's deployment (any replica) to do
the same; the engine it hands to ``tasks`` is a stand-in whose tokenization and
post-processing calls are remote too. So the ingress loads no model and no tokenizer, and
every number is computed by the same engine code as in one process.

Engine calls that ``tasks`` makes synchronously run on this registry's threads (never on the
event loop); each one schedules the remote call on the loop and waits for it. Every remote
call is retried on another replica when the one it reached dies (all of them are idempotent);
errors raised in a replica (``ModelUnavailable``, ``InferenceFailed``, ...) come back as
themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle

from embedserve.cache import EmbeddingCache
from embedserve.catalog import Catalog, CatalogEntry
from embedserve.engines.base import (
    DenseEngine,
    Engine,
    FloatArray,
    IntArray,
    RerankEngine,
    RerankUnits,
    Side,
    SparseEngine,
    Token,
    Tokens,
)
from embedserve.errors import EmbedServeError, InferenceFailed, ModelUnavailable
from embedserve.families import detect as detect_family
from embedserve.model_settings import ModelSettings
from embedserve.registry import ModelHandle, ModelState, Registry, describe, merged_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 3  # further tries of a call whose replica died; each goes to a live replica
RETRY_DELAY_S = 0.2
REFRESH_S = 2.0  # how often the ingress re-reads each model's state and stats
# Threads that wait on remote tokenization and post-processing: waiting, not computing.
IO_THREADS = 32
_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


def _no_local_engine(entry: CatalogEntry) -> Engine:
    raise RuntimeError(f"model '{entry.id}' loads in its Ray replicas, never in the ingress. This is a bug.")


class RemoteModelHandle:
    """One catalogue model served by a Ray deployment (a :class:`ModelHandle`): state and stats
    as its replicas report them."""

    def __init__(self, entry: CatalogEntry, deployment: DeploymentHandle[Any], registry: RayRegistry) -> None:
        self.entry = entry
        self.id = entry.id
        self.state = ModelState.NOT_LOADED
        self.error: str | None = None
        self.load_seconds: float | None = None  # the replicas' own, in their info
        self.cache: EmbeddingCache | None = None  # the ingress's (set by the registry)
        self._deployment = deployment
        self._registry = registry
        self._remote_engine: Engine | None = None
        self._reported: dict[str, Any] | None = None
        self.replicas: dict[str, dict[str, Any]] = {}  # replica id -> {pid, node, requests}

    @property
    def queue_depth(self) -> int:
        return 0  # queues are in the replicas; their depth is in info()'s stats

    async def call(self, method: str, *args: Any) -> Any:
        """``method`` of the model's deployment on any replica, retried on another if it dies."""
        for attempt in range(RETRIES + 1):
            try:
                return await getattr(self._deployment, method).remote(*args)
            except RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, EmbedServeError):
                    raise cause from None
                log.error("model %s: %s failed in its replica: %s", self.id, method, exc)
                raise InferenceFailed(f"model '{self.id}' failed on this request") from None
            except _LOST as exc:
                if attempt == RETRIES:
                    raise ModelUnavailable(
                        f"model '{self.id}': no replica answered after {RETRIES + 1} tries", param="model"
                    ) from exc
                log.warning("model %s: replica lost during %s (%s); retrying", self.id, method, type(exc).__name__)
                await asyncio.sleep(RETRY_DELAY_S * (attempt + 1))
        raise AssertionError("unreachable")

    def call_sync(self, method: str, *args: Any) -> Any:
        """:meth:`call` from one of the registry's threads (the engine stand-ins' synchronous methods)."""
        loop = self._registry.loop
        if loop is None:
            raise RuntimeError("the registry was not started. This is a bug.")
        return asyncio.run_coroutine_threadsafe(self.call(method, *args), loop).result()

    def _report(self, info: dict[str, Any]) -> None:
        self._reported = info
        self.state = ModelState(info["state"])
        self.error = info["error"]
        replica = info.get("replica")
        if replica is not None:
            self.replicas.setdefault(replica["id"], {"pid": replica["pid"], "node": replica["node"], "requests": 0})

    async def refresh(self) -> None:
        self._report(await self.call("info"))

    async def load(self, *, settle: bool = True) -> None:  # the replica settles its own heap
        self._report(await self.call("load"))

    async def unload(self) -> None:
        """Unloads the replica that takes the call (with several replicas, scale them instead)."""
        self._report(await self.call("unload"))
        self._remote_engine = None

    async def ready_engine(self) -> Engine:
        if self._remote_engine is None or self.state is not ModelState.READY:
            facts = await self.call("ready")  # a lazy replica loads; 503 from a failed or unloaded one
            self._report(facts["info"])
            self._remote_engine = _stand_in(self, facts)
        return self._remote_engine

    def settings(self, engine: Engine | None = None) -> ModelSettings:
        return merged_settings(self.entry, engine or self._remote_engine)

    async def model_settings(self) -> ModelSettings:
        return self.settings(await self.ready_engine())

    async def tokenize(self, fn: Callable[[], T], chars: int = 1, *, compute: bool = True, texts: int = 1) -> T:
        """Run ``fn`` (a stand-in engine's remote tokenization) on a waiting thread; the replica
        tokenizes on its own fair pool."""
        return await asyncio.wrap_future(self._registry.io_pool.submit(fn))

    async def tokenize_texts(
        self, texts: Sequence[str], encode: Callable[[list[str]], list[T]], prefix_chars: int = 0
    ) -> list[T]:
        """One remote call for all the texts (the replica takes turns with other requests there)."""
        return await self.tokenize(lambda: encode(list(texts)))

    async def submit(self, units: Sequence[Tokens]) -> list[Any]:
        """The units' outputs from a replica's batcher (batched there with other requests)."""
        replica, outputs = await self.call("submit", list(units))
        seen = self.replicas.setdefault(replica["id"], {"pid": replica["pid"], "node": replica["node"], "requests": 0})
        seen["requests"] += 1
        result: list[Any] = outputs
        return result

    def info(self) -> dict[str, Any]:
        if self._reported is not None:
            info = dict(self._reported)
        else:  # nothing heard from a replica yet: the catalogue's
            info = describe(self.entry, self.state, self.error, family=detect_family(self.entry))
        info.pop("replica", None)
        info["state"], info["loaded"], info["error"] = self.state.value, self.state is ModelState.READY, self.error
        info["replicas"] = [{"id": rid, **seen} for rid, seen in self.replicas.items()]
        return info

    async def close(self) -> None:
        """The replicas close their own models; the ingress drops its stand-in."""
        self._remote_engine = None


class RayRegistry(Registry):
    """The catalogue's models as Ray deployments (one handle each), for the ingress's app."""

    def __init__(self, catalog: Catalog, deployments: dict[str, DeploymentHandle[Any]]) -> None:
        def remote(entry: CatalogEntry) -> ModelHandle:
            return RemoteModelHandle(entry, deployments[entry.id], self)

        super().__init__(catalog, _no_local_engine, handles=remote)
        self.io_pool = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="ray-io")  # remote calls wait here
        self.loop: asyncio.AbstractEventLoop | None = None  # the app's, set by start
        self._refresher: asyncio.Task[None] | None = None

    def start(self, *, lazy: bool) -> None:
        """The replicas load their models themselves; the ingress waits for the preloaded ones."""
        self.loop = asyncio.get_running_loop()
        super().start(lazy=lazy)
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            for handle in self.models.values():
                if not isinstance(handle, RemoteModelHandle):
                    continue  # a fusion reranker: its state is its models'
                try:
                    await handle.refresh()
                except Exception as exc:  # the next round tries again; requests report their own errors
                    log.debug("model %s: no state this time: %s", handle.id, exc)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await super().close()
        self.io_pool.shutdown(wait=False, cancel_futures=True)


class _RemoteTokenizer:
    """What ``tasks`` asks of ``engine.tokenizer``, answered by a replica."""

    def __init__(self, handle: RemoteModelHandle, vocab_size: int) -> None:
        self._handle = handle
        self.vocab_size = vocab_size

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[Token]]:
        result: list[list[Token]] = self._handle.call_sync("tokenize", list(texts), add_special_tokens)
        return result

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        result: list[str] = self._handle.call_sync("decode", [list(row) for row in ids], skip_special_tokens)
        return result


class _RemoteEngine:
    """Facts of the replica's engine; its tokenization and post-processing done by a replica."""

    def __init__(self, handle: RemoteModelHandle, facts: dict[str, Any]) -> None:
        self._handle = handle
        self.max_length = int(facts["max_length"])
        self.dimension = facts["dimension"]
        self.own_settings = facts.get("own_settings")
        self.device = str(facts["device"])
        self.tokenizer = _RemoteTokenizer(handle, int(facts["vocab_size"]))

    def forward(self, batch: Sequence[Tokens]) -> Any:
        raise RuntimeError("forward passes run in the model's replicas (submit). This is a bug.")

    def encode_texts(
        self,
        texts: Sequence[str],
        prompt: str | None,
        side: Side = "right",
        limit: int | None = None,
        task: str | None = None,
    ) -> list[Tokens]:
        result: list[Tokens] = self._handle.call_sync("encode_texts", list(texts), prompt, side, limit, task)
        return result


class RemoteDenseEngine(_RemoteEngine, DenseEngine):  # type: ignore[misc]
    pass


class RemoteSparseEngine(_RemoteEngine, SparseEngine):  # type: ignore[misc]
    def tokens(self, indices: IntArray) -> list[str]:
        result: list[str] = self._handle.call_sync("tokens", np.asarray(indices))
        return result


class RemoteRerankEngine(_RemoteEngine, RerankEngine):  # type: ignore[misc]
    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        result: RerankUnits = self._handle.call_sync("encode_pairs", query, list(documents), side, doc_limit)
        return result

    def scores(self, outputs: Any, query_units: int, raw: bool = False) -> FloatArray:
        result: FloatArray = self._handle.call_sync("scores", list(outputs), query_units, raw)
        return result


def _stand_in(handle: RemoteModelHandle, facts: dict[str, Any]) -> Engine:
    kinds: dict[str, type[_RemoteEngine]] = {
        "embeddings": RemoteDenseEngine,
        "sparse-embeddings": RemoteSparseEngine,
        "rerank": RemoteRerankEngine,
    }
    spec = handle.entry.spec
    if spec.type not in kinds or len(spec.serves) > 1:
        raise ModelUnavailable(
            f"model '{handle.id}' (type {spec.type}, engine {spec.engine_name}) is not served under --ray; "
            "serve it without --ray",
            param="model",
        )
    engine = kinds[spec.type](handle, facts)
    assert isinstance(engine, Engine)
    return engine

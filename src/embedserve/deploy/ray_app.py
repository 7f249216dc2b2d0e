"""The Ray Serve application: one deployment per catalogue model, and the HTTP app in front.

- :class:`ModelReplica` holds one model as the single-process server does (the engine
  loaded here, its tokenizer threads, its dynamic batcher): requests from every ingress
  batch together inside the replica.
- :class:`HTTPIngress` runs the same FastAPI app as ``embedserve serve`` (``create_app``),
  with a :class:`~embedserve.deploy.remote.RayRegistry` in place of the in-process one.
- :func:`build` is the application builder a Serve config imports
  (``embedserve.deploy.ray_app:build``); :func:`serve_on_ray` is ``embedserve serve --ray``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from embedserve import __version__
from embedserve.catalog import Catalog, load_catalog
from embedserve.deploy.ray_config import (
    APP_NAME,
    INGRESS_NAME,
    INGRESS_OPTIONS,
    app_args,
    cpus_needed,
    deployed,
    deployment_options,
    torch_threads,
)
from embedserve.deploy.remote import RayRegistry
from embedserve.engines.base import Engine, RerankEngine, SparseEngine, TextEngine, Tokens
from embedserve.registry import Registry
from embedserve.settings import Settings

log = logging.getLogger("embedserve")


def _engine(engine: Engine, kind: type[Any]) -> Any:
    if not isinstance(engine, kind):
        raise TypeError(f"{type(engine).__name__} is not a {kind.__name__}. This is a bug.")
    return engine


class ModelReplica:
    """One catalogue model in a Ray replica, loaded here; the methods the ingress's handle calls."""

    async def __init__(self, model_id: str, args: dict[str, Any]) -> None:  # type: ignore[misc]  # Ray awaits it
        from embedserve.engines import EngineOptions, create_engine, passive_omp_threads

        settings = Settings(**args)
        catalog = load_catalog(settings.config)
        entry = catalog.entries[model_id]
        passive_omp_threads()
        import torch  # after passive_omp_threads: it takes effect only before torch loads

        threads = torch_threads(entry.spec.ray)
        torch.set_num_threads(threads)
        options = EngineOptions(cache_dir=settings.cache_dir, torch_threads=threads)
        self._registry = Registry(
            Catalog(catalog.path, {model_id: entry}),
            partial(create_engine, options=options),
            tokenizer_threads=settings.tokenizer_threads,
            compute_nice=settings.compute_nice,
        )
        self._handle = self._registry.models[model_id]
        context = serve.get_replica_context()
        self._replica = {
            "id": context.replica_id.unique_id,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }
        if entry.spec.preload and not settings.lazy:
            await self._handle.load()  # Serve sends no request here until this returns

    def _info(self) -> dict[str, Any]:
        return {**self._handle.info(), "replica": self._replica}

    async def info(self) -> dict[str, Any]:
        return self._info()

    async def load(self) -> dict[str, Any]:
        await self._handle.load()
        return self._info()

    async def unload(self) -> dict[str, Any]:
        await self._handle.unload()
        return self._info()

    async def ready(self) -> dict[str, Any]:
        """The engine's facts the ingress's stand-in needs (loads a lazy model; 503 if it cannot)."""
        engine = await self._handle.ready_engine()
        return {
            "info": self._info(),
            "max_length": engine.max_length,
            "dimension": engine.dimension,
            "own_settings": engine.own_settings,
            "device": engine.device,
            "vocab_size": engine.tokenizer.vocab_size,
        }

    async def encode_texts(
        self, texts: list[str], prompt: str | None, side: Any, limit: int | None, task: str | None = None
    ) -> list[Tokens]:
        engine = _engine(await self._handle.ready_engine(), TextEngine)
        units: list[Tokens] = await self._handle.tokenize(
            lambda: engine.encode_texts(texts, prompt, side, limit, task=task)
        )
        return units

    async def encode_pairs(self, query: str, documents: list[str], side: Any, doc_limit: int | None) -> Any:
        engine = _engine(await self._handle.ready_engine(), RerankEngine)
        return await self._handle.tokenize(lambda: engine.encode_pairs(query, documents, side, doc_limit))

    async def tokenize(self, texts: list[str], add_special_tokens: bool) -> Any:
        engine = await self._handle.ready_engine()
        return await self._handle.tokenize(lambda: engine.tokenizer.tokenize(texts, add_special_tokens))

    async def decode(self, ids: list[list[int]], skip_special_tokens: bool) -> Any:
        engine = await self._handle.ready_engine()
        return await self._handle.tokenize(lambda: engine.tokenizer.decode(ids, skip_special_tokens))

    async def tokens(self, indices: np.ndarray[Any, Any]) -> list[str]:
        engine = _engine(await self._handle.ready_engine(), SparseEngine)
        return engine.tokens(indices)  # type: ignore[no-any-return]

    async def scores(self, outputs: np.ndarray[Any, Any], query_units: int, raw: bool) -> Any:
        engine = _engine(await self._handle.ready_engine(), RerankEngine)
        return await asyncio.to_thread(engine.scores, outputs, query_units, raw)

    async def submit(self, units: Sequence[Tokens]) -> tuple[dict[str, Any], list[Any]]:
        """The units' outputs from this replica's batcher, with which replica computed them."""
        return self._replica, await self._handle.submit(units)

    async def __del__(self) -> None:
        await self._registry.close()


class HTTPIngress:
    """The FastAPI app of ``embedserve serve``, reaching the models through their deployments."""

    def __init__(self, args: dict[str, Any], deployments: dict[str, DeploymentHandle[Any]]) -> None:
        self._args = args
        self._deployments = deployments

    def __serve_build_asgi_app__(self) -> Any:
        from embedserve.api import create_app

        settings = Settings(**self._args)
        catalog = load_catalog(settings.config)
        return create_app(settings, catalog, registry_factory=lambda c, _: RayRegistry(c, self._deployments))


def build(args: dict[str, Any]) -> Application:
    """The application for a Serve config's ``import_path``; ``args`` are :class:`Settings` fields
    (``config``: the catalogue, as a path every node can read)."""
    settings = Settings(**args)
    catalog = load_catalog(settings.config)
    passed = app_args(settings)
    model = serve.deployment(ModelReplica)
    models = {
        e.id: model.options(name=e.id, **deployment_options(e.spec.ray)).bind(e.id, passed)  # type: ignore[attr-defined]
        for e in deployed(catalog)
    }
    ingress = serve.deployment(serve.ingress()(HTTPIngress))
    app: Application = ingress.options(name=INGRESS_NAME, **INGRESS_OPTIONS).bind(passed, models)  # type: ignore[attr-defined]
    return app


def serve_on_ray(settings: Settings, catalog: Catalog, address: str | None) -> int:
    """``embedserve serve --ray``: the app on a local Ray cluster (started here; the caller set
    :func:`~embedserve.deploy.local_cluster_env` before importing this module) or on the cluster at
    ``address``; SIGTERM or SIGINT undoes what this started."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = address is None
    if local:
        cpus = max(os.cpu_count() or 1, math.ceil(cpus_needed(catalog)))
        ray.init(num_cpus=cpus, include_dashboard=False, namespace=APP_NAME)
    else:
        ray.init(address=address, namespace=APP_NAME)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build(app_args(settings)), name=APP_NAME, route_prefix="/", blocking=False)
        where = "a local Ray cluster" if local else f"the Ray cluster at {address}"
        log.info(
            "embedserve %s on %s: %d models from %s on http://%s:%d",
            __version__,
            where,
            len(catalog.entries),
            settings.config,
            settings.host,
            settings.port,
        )
        while not stop.wait(0.5):
            pass
        log.info("embedserve: stopping")
        return 0
    except RuntimeError as exc:
        log.error("embedserve: the Ray deployment failed: %s", exc)
        return 1
    finally:
        if local:
            serve.shutdown()  # type: ignore[no-untyped-call]
            ray.shutdown()
        else:
            serve.delete(APP_NAME)
            ray.shutdown()

"""The app factory. State (the registry, the limits) is made in the lifespan, never at import.

Middleware, outermost first: the request context (request id, deadline, timing headers, access
log, request metrics), the shutdown guard (503 for requests still running when the grace after
SIGTERM ends), CORS (when origins are set), API keys (when keys are set; without keys, the Origin check), body limits,
the early answers (``shed``: the 429 of a model that cannot keep up, and ``/health``, before
routing), the disconnect watcher, and innermost the compute routes' direct call (past Starlette's
router for a POST whose body validates: ``direct_routes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from embedserve import __version__, cache
from embedserve.api import cohere, connections, health, models, multi_vector, native, openai, playground, tei
from embedserve.api.auth import APIKeyAuth
from embedserve.api.body_limit import BodyLimits
from embedserve.api.direct_routes import DirectRoutes
from embedserve.api.disconnect import CancelOnDisconnect
from embedserve.api.errors import error_responses, install_error_handlers
from embedserve.api.origin import OriginCheck
from embedserve.api.request_context import RequestContextMiddleware
from embedserve.api.shed import Shed
from embedserve.api.shutdown import Drain, ShutdownGuard
from embedserve.api.web import HeadAndDocsPolicy
from embedserve.catalog import Catalog, load_catalog
from embedserve.engines import EngineOptions, create_engine
from embedserve.metrics import Metrics
from embedserve.registry import EngineFactory, Registry
from embedserve.settings import Settings
from embedserve.tasks import Limits


def create_app(
    settings: Settings,
    catalog: Catalog | None = None,
    engine_factory: EngineFactory | None = None,
    registry_factory: Callable[[Catalog, Settings], Registry] | None = None,
) -> FastAPI:
    """Build the app for ``settings``; the catalogue is read from ``settings.config`` unless given.
    ``engine_factory`` replaces the engines (default: :func:`create_engine` with the settings'
    :class:`EngineOptions`); ``registry_factory`` the in-process registry (``deploy/``: models in
    Ray replicas)."""
    catalog = catalog if catalog is not None else load_catalog(settings.config)
    if engine_factory is None:
        engine_factory = partial(create_engine, options=EngineOptions.from_settings(settings))
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if registry_factory is not None:
            registry = registry_factory(catalog, settings)
        else:
            registry = Registry(
                catalog,
                engine_factory,
                tokenizer_threads=settings.tokenizer_threads,
                tokenizer_queue_chars=settings.tokenizer_queue_chars,
                observer=metrics.observer,
                compute_nice=settings.compute_nice,
                alone=connections.one_request_in_progress,
            )
        metrics.watch(lambda: registry.models)
        metrics.watch_loop()  # the lifespan runs on the event loop's thread
        embedding_cache = cache.from_settings(settings)
        registry.use_cache(embedding_cache)
        if embedding_cache is not None:
            metrics.watch_cache(embedding_cache)
        app.state.registry = registry
        app.state.limits = Limits.from_settings(settings)
        registry.start(lazy=settings.lazy)
        try:
            yield
        finally:
            await registry.close()
            if embedding_cache is not None:
                await embedding_cache.close()

    app = FastAPI(
        title="embedserve",
        version=__version__,
        description="Dense embeddings, sparse (SPLADE) embeddings and reranking for every model in models.yaml.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.settings = settings
    # added innermost first
    app.add_middleware(DirectRoutes)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(Shed)  # inside the body limits (it reads the body they checked), outside the watcher
    app.add_middleware(HeadAndDocsPolicy)
    app.add_middleware(BodyLimits, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth)
    if settings.api_keys:
        app.add_middleware(APIKeyAuth, keys=settings.api_keys, public_probes=settings.public_probes)
    else:
        app.add_middleware(OriginCheck, allowed=settings.cors_origins)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.state.drain = Drain()  # started by the server's shutdown (cli.py: GracefulServer)
    app.add_middleware(ShutdownGuard, drain=app.state.drain)
    app.add_middleware(RequestContextMiddleware, timeout=settings.request_timeout, metrics=metrics)
    install_error_handlers(app)
    for module in (openai, native, multi_vector, cohere, tei, models, health):
        dialect = getattr(module.router.route_class, "dialect", "openai")
        app.include_router(module.router, responses=error_responses(dialect))
    # Read by the front door (``/``), which links the playground only where it is served.
    app.state.playground_path = playground.PATH if settings.playground else None
    if settings.playground:
        app.include_router(playground.router)
    return app

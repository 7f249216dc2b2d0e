"""The app factory. State (the registry, the limits) is made in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from embedserve import __version__
from embedserve.api import cohere, health, models, native, openai, playground, tei
from embedserve.api.disconnect import CancelOnDisconnect
from embedserve.api.errors import install_error_handlers
from embedserve.catalog import Catalog, load_catalog
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
    ``registry_factory`` replaces the in-process registry (``deploy/``: models in Ray replicas)."""
    catalog = catalog if catalog is not None else load_catalog(settings.config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if registry_factory is not None:
            registry = registry_factory(catalog, settings)
        else:
            registry = Registry(catalog, engine_factory, tokenizer_threads=settings.tokenizer_threads)
        app.state.registry = registry
        app.state.limits = Limits(max_inputs=settings.max_inputs, max_input_chars=settings.max_input_chars)
        registry.start(lazy=settings.lazy)
        try:
            yield
        finally:
            await registry.close()

    app = FastAPI(
        title="embedserve",
        version=__version__,
        description="Dense embeddings, sparse (SPLADE) embeddings and reranking for every model in models.yaml.",
        lifespan=lifespan,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(CancelOnDisconnect)
    install_error_handlers(app)
    for module in (openai, native, cohere, tei, models, health):
        app.include_router(module.router)
    # Read by the front door (``/``), which links the playground only where it is served.
    app.state.playground_path = playground.PATH if settings.playground else None
    if settings.playground:
        app.include_router(playground.router)
    return app

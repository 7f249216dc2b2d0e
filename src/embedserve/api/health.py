"""Liveness and the service's front door."""

from __future__ import annotations

from fastapi import APIRouter, Request

from embedserve import __version__
from embedserve.api.deps import RegistryDep
from embedserve.api.responses import FastJSONResponse
from embedserve.api.schemas import Health

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health)
async def health(registry: RegistryDep) -> FastJSONResponse:
    """``degraded`` when a model failed to load (the others keep serving)."""
    return FastJSONResponse(registry.health())


@router.get("/")
async def root(request: Request) -> FastJSONResponse:
    links = {
        "name": "embedserve",
        "version": __version__,
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": "/health",
        "models": "/api/v1/models",
    }
    playground: str | None = getattr(request.app.state, "playground_path", None)
    if playground:
        links["playground"] = playground
    return FastJSONResponse(links)

"""Liveness (``/health``), readiness (``/ready``), Prometheus metrics (``/metrics``) and the
service's front door."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from embedserve import __version__
from embedserve.api.deps import registry_of
from embedserve.api.responses import FastJSONResponse
from embedserve.api.schemas import Health, Readiness
from embedserve.metrics import Metrics

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health)
async def health(request: Request) -> FastJSONResponse:
    """``degraded`` when a model failed to load (the others keep serving)."""
    registry = registry_of(request)
    return FastJSONResponse(registry.health())


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}})
async def ready(request: Request) -> FastJSONResponse:
    """200 once every preloaded model is ready; else 503 with each model's state and reason
    (``degraded``: one failed to load while the others serve)."""
    registry = registry_of(request)
    readiness = registry.readiness()
    return FastJSONResponse(readiness, status_code=200 if readiness["ready"] else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics, in its text format."""
    exported: Metrics = request.app.state.metrics
    return Response(exported.render(), media_type=exported.content_type)


@router.get("/")
async def root(request: Request) -> FastJSONResponse:
    links = {
        "name": "embedserve",
        "version": __version__,
        "docs": "/docs",
        "openapi": "/openapi.json",
        "health": "/health",
        "ready": "/ready",
        "metrics": "/metrics",
        "models": "/api/v1/models",
    }
    playground: str | None = getattr(request.app.state, "playground_path", None)
    if playground:
        links["playground"] = playground
    return FastJSONResponse(links)

"""Model listing and lifecycle: the seed's ``/api/v1/models`` and OpenAI's ``/v1/models``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from embedserve.api.deps import registry_of
from embedserve.api.responses import FastJSONResponse
from embedserve.api.schemas import ModelInfo, ModelList
from embedserve.errors import ModelUnavailable
from embedserve.registry import ModelState

router = APIRouter(tags=["models"])


@router.get("/api/v1/models", response_model=ModelList)
async def list_models(request: Request) -> FastJSONResponse:
    """The seed's ``{"models", "total"}``, plus OpenAI's ``{"object": "list", "data"}`` so that
    ``OpenAI(base_url=".../api/v1").models.list()`` works too."""
    registry = registry_of(request)
    models = [m.info() for m in registry.models.values()]
    return FastJSONResponse(
        {"models": models, "total": len(models), "object": "list", "data": [_openai_model(m) for m in models]}
    )


@router.get("/api/v1/models/{model_id}", response_model=ModelInfo)
async def get_model(model_id: str, request: Request) -> FastJSONResponse:
    registry = registry_of(request)
    return FastJSONResponse(registry.get(model_id).info())


@router.post("/api/v1/models/{model_id}/load", response_model=ModelInfo)  # POST only: an <img> must not load
async def load_model(model_id: str, request: Request) -> FastJSONResponse:
    """Load a model (waits until it is ready); 503 with the reason when loading fails."""
    registry = registry_of(request)
    handle = registry.get(model_id)
    await handle.load()
    if handle.state is ModelState.FAILED:
        raise ModelUnavailable(f"model '{model_id}' failed to load: {handle.error}", param="model")
    return FastJSONResponse(handle.info())


@router.post("/api/v1/models/{model_id}/unload", response_model=ModelInfo)
async def unload_model(model_id: str, request: Request) -> FastJSONResponse:
    """Free a model's memory; its requests get 503 until it is loaded again."""
    registry = registry_of(request)
    handle = registry.get(model_id)
    await handle.unload()
    return FastJSONResponse(handle.info())


def _openai_model(info: dict[str, Any]) -> dict[str, Any]:
    return {"id": info["id"], "object": "model", "created": 0, "owned_by": "embedserve", **info}


@router.get("/v1/models")
async def openai_list_models(request: Request) -> FastJSONResponse:
    """OpenAI's list shape, for ``client.models.list()``."""
    registry = registry_of(request)
    return FastJSONResponse({"object": "list", "data": [_openai_model(m.info()) for m in registry.models.values()]})


@router.get("/v1/models/{model_id}")
async def openai_get_model(model_id: str, request: Request) -> FastJSONResponse:
    registry = registry_of(request)
    return FastJSONResponse(_openai_model(registry.get(model_id).info()))

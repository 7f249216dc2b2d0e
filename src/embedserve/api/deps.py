"""Dependencies: the app's state, reached per request (nothing lives at import time)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from embedserve.registry import Registry
from embedserve.settings import Settings
from embedserve.tasks import Limits


# async: FastAPI runs a sync dependency on a worker thread, two thread hops a request for a dict lookup
async def get_registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def get_limits(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


RegistryDep = Annotated[Registry, Depends(get_registry)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

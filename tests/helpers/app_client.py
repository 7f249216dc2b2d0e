"""An httpx client on an app in-process (ASGI, no socket), with its lifespan run and its models started."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``async with app_client(app) as client:`` the app started (its lifespan, then its registry's
    preloaded models), stopped on the way out."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as client:
            await app.state.registry.wait_started()
            yield client


def take_out_middleware(app: FastAPI, middleware: type) -> None:
    """The app's built middleware stack with the layer of class ``middleware`` bypassed: the layer
    above it calls what it called (an arm of a side-by-side test or bench, without that layer)."""
    layer: Any = app.middleware_stack
    while not isinstance(layer.app, middleware):
        layer = layer.app
    layer.app = layer.app.app

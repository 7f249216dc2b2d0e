"""The app in-process (httpx ASGITransport, lifespan run) with tiny models, shared per module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from helpers.server import ROOT
from helpers.tiny_models import tiny_catalog_data

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

LIMITS = {"max_inputs": 16, "max_input_chars": 2000}


@pytest.fixture(scope="module")
def app(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    broken = tmp_path_factory.mktemp("broken-model")  # a directory with no weights: fails to load
    (broken / "config.json").write_text("{}")
    data = tiny_catalog_data(
        tiny_models,
        **{
            "broken": {"name": str(broken), "type": "embeddings", "device": "cpu"},
            "lazy-dense": {"name": str(tiny_models["dense"]), "type": "embeddings", "device": "cpu", "preload": False},
            "queued": {
                "name": str(tiny_models["dense"]),
                "type": "embeddings",
                "device": "cpu",
                "batching": {"max_queue": 4, "max_wait_ms": 0, "passes": 1},  # one batch thread to hold
            },
            "capped": {
                "name": str(tiny_models["dense"]),
                "type": "embeddings",
                "device": "cpu",
                "max_inputs": 2,
                "max_length": 8,
                "default_prompt": "query",
                "prompts": {"query": "query: "},
            },
        },
    )
    return create_app(Settings(**LIMITS), parse_catalog(data, ROOT))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as c:
            await app.state.registry.wait_started()
            yield c

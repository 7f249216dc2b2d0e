"""The app in-process (httpx ASGITransport, lifespan run) with tiny models, shared per module.

A module whose tests need no real numbers (errors, limits, auth, metrics) defines its ``app`` as
``fake_app``: the same model ids on ``engine: fake``, so it imports no torch and loads no model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from helpers.app_client import app_client
from helpers.server import ROOT
from helpers.tiny_models import FAKE_TOKENIZER, fake_catalog_data, tiny_catalog_data

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

LIMITS = {"max_inputs": 16, "max_input_chars": 2000}


def _extra_models(dense: str, broken: Path, engine: dict[str, str]) -> dict[str, dict[str, object]]:
    """The models besides the four tiny ones, on ``dense`` (a model directory or package)."""
    (broken / "config.json").write_text("{}")  # a directory with no weights: fails to load
    return {
        "broken": {"name": str(broken), "type": "embeddings", "device": "cpu", **engine},
        "lazy-dense": {"name": dense, "type": "embeddings", "device": "cpu", "preload": False, **engine},
        "queued": {
            "name": dense,
            "type": "embeddings",
            "device": "cpu",
            "batching": {"max_queue": 4, "max_wait_ms": 0, "passes": 1},  # one batch thread to hold
            **engine,
        },
        "capped": {
            "name": dense,
            "type": "embeddings",
            "device": "cpu",
            "max_inputs": 2,
            "max_length": 8,
            "default_prompt": "query",
            "prompts": {"query": "query: "},
            **engine,
        },
    }


@pytest.fixture(scope="module")
def app(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    extra = _extra_models(str(tiny_models["dense"]), tmp_path_factory.mktemp("broken-model"), {})
    data = tiny_catalog_data(tiny_models, **extra)
    return create_app(Settings(**LIMITS), parse_catalog(data, ROOT))


@pytest.fixture(scope="module")
def fake_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """:func:`app`'s catalogue on ``engine: fake``."""
    extra = _extra_models(FAKE_TOKENIZER, tmp_path_factory.mktemp("broken-model"), {"engine": "fake"})
    return create_app(Settings(**LIMITS), parse_catalog(fake_catalog_data(**extra), ROOT))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as c:
        yield c

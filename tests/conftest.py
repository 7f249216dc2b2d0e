"""Shared fixtures: offline mode, tiny models built once, the real default models loaded once."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.family_models import TinyModel, build_family_models
from helpers.server import ROOT, Server, running_server
from helpers.tiny_models import build_tiny_models


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder (unit, api, integration, e2e, browser, robustness, container) so ``-m`` can pick layers."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in ("unit", "api", "integration", "e2e", "browser", "robustness", "container"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ONNX / OpenVINO exports of this run (and of the servers it starts) in a fresh directory, not
    the user's cache: every run exports once, as a clean CI machine would."""
    path = tmp_path_factory.mktemp("engine-cache")
    previous = os.environ.get("EMBEDSERVE_CACHE_DIR")
    os.environ["EMBEDSERVE_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("EMBEDSERVE_CACHE_DIR", None)
    else:
        os.environ["EMBEDSERVE_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyModel]:
    """One tiny random model per family of the support matrix (helpers/family_models.py)."""
    return build_family_models(tmp_path_factory.mktemp("family-models"))


@pytest.fixture(scope="session")
def default_server() -> Iterator[Server]:
    """The real server process with the default catalogue, shared by the e2e tests."""
    with running_server(ROOT / "models.yaml") as server:
        yield server
    assert server.process.poll() is not None, "the server outlived its tests"

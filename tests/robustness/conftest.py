"""The robustness suite: real server processes on 127.0.0.1 with tiny models, hit with bad input,
load, faults and schemathesis. Its figures (requests sent, bad inputs tried, 5xx seen, memory
over the soak) go to ``test-output/robustness.json`` and are printed at the end of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.server import Server, running_server
from helpers.tiny_models import copy_tokenizer, tiny_catalog_data
from robustness.support import ATTACKS, FIGURES, KEY, OUTPUT, attack_table


@pytest.fixture(scope="session", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        OUTPUT.parent.mkdir(parents=True, exist_ok=True)
        OUTPUT.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ATTACKS:
        terminalreporter.section("attacks: worst /health latency, RSS growth, statuses seen")
        for line in attack_table():
            terminalreporter.write_line(line)
    if FIGURES:
        terminalreporter.section("robustness figures (test-output/robustness.json)")
        for name, value in sorted(FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")


def build_faulty_model(root: Path) -> Path:
    """A dense model whose embedding table (2,000 rows) is smaller than its tokenizer's vocabulary:
    inputs of single letters and digits (ids below 2,000) work, any real word makes the forward
    pass raise (IndexError) inside the batch thread."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    bert = root / "faulty-bert"
    bert.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=2000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).save_pretrained(bert)
    copy_tokenizer(bert)
    model = SentenceTransformer(modules=[Transformer(str(bert)), Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(root / "faulty"))
    return root / "faulty"


def write_catalog(path: Path, tiny_models: dict[str, Path], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump(tiny_catalog_data(tiny_models, **extra), sort_keys=False))
    return path


# The embedding cache small enough to fill during the soak's warm-up: its RSS growth then measures
# leaks, not the cache growing to its bound (256 MiB by default).
SERVER_ENV = {"EMBEDSERVE_API_KEYS": KEY, "EMBEDSERVE_TORCH_THREADS": "1", "EMBEDSERVE_CACHE_BYTES": str(4 << 20)}


@pytest.fixture(scope="session")
def robust_server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Tiny models plus a model that fails to load, one that raises on real words, and one with a
    queue of 16 inputs; API keys on; a 5 s request deadline."""
    root = tmp_path_factory.mktemp("robust")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    dense = str(tiny_models["dense"])
    catalog = write_catalog(
        root / "models.yaml",
        tiny_models,
        broken={"name": str(broken), "type": "embeddings", "device": "cpu"},
        faulty={"name": str(build_faulty_model(root)), "type": "embeddings", "device": "cpu"},
        small_queue={
            "name": dense,
            "type": "embeddings",
            "device": "cpu",
            "batching": {"max_queue": 16, "max_batch_size": 4},
        },
    )
    env = {**SERVER_ENV, "EMBEDSERVE_REQUEST_TIMEOUT": "5"}
    with running_server(catalog, env=env, log_path=root / "server.log") as server:
        yield server
    assert server.process.poll() is not None, "the server outlived its tests"


@pytest.fixture(scope="session")
def client(robust_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=robust_server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


# The open server: no API keys (the default, where Origin and Host are checked) and the connection
# limits at short values, so that each attack's effect shows within seconds.
OPEN_ENV = {
    "EMBEDSERVE_TORCH_THREADS": "1",
    "EMBEDSERVE_REQUEST_TIMEOUT": "30",
    "EMBEDSERVE_IDLE_TIMEOUT": "2",
    "EMBEDSERVE_HEADER_TIMEOUT": "2",
    "EMBEDSERVE_MIN_BODY_RATE": "1024",
    "EMBEDSERVE_MAX_HEADER_BYTES": "16384",
    "EMBEDSERVE_MAX_CONNECTIONS": "100",
    "EMBEDSERVE_TOKENIZER_QUEUE_CHARS": "40000000",
}


@pytest.fixture(scope="session")
def open_server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Tiny models, no API keys, short connection timeouts."""
    root = tmp_path_factory.mktemp("open")
    catalog = write_catalog(root / "models.yaml", tiny_models)
    with running_server(catalog, env=OPEN_ENV, log_path=root / "server.log", timeout=600) as server:
        yield server
    assert server.process.poll() is not None, "the server outlived its tests"


@pytest.fixture(scope="session")
def open_client(open_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_server.url, timeout=120) as c:
        yield c

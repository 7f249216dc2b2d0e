"""The image built from the repository's Dockerfile with podman and run as a user would run it.

One container serves the module, started the strictest way the docs allow: a read-only root
filesystem, a tmpfs on /tmp and a fresh volume on /data. It must be ready within 30 s without
exporting, answer exactly what the server run from the checkout answers, run as a non-root user,
write only to /data and /tmp, and end with exit 0 on SIGTERM after answering the request in flight.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.container import Container, Image, build_image, podman, report, running_container, wait_ready
from helpers.server import ROOT, Server

pytestmark = pytest.mark.slow

TAG = "localhost/embedserve:test"
READY_WITHIN = 30.0
SHUTDOWN_GRACE = 30  # EMBEDSERVE_SHUTDOWN_GRACE in the container (the default)
DENSE, SPARSE, RERANK = "all-minilm-l6-v2", "splade-tiny", "hybrid-rerank"
TEXTS = [
    "hi",
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Heart attacks are caused by a blockage of blood flow to the heart muscle. " * 12,
]
QUERY = "How do I bake bread at home?"
DOCUMENTS = [
    "Knead the dough, let it rise, then bake it in a hot oven.",
    "The stock market fell sharply on Tuesday.",
    "Sourdough needs a starter, flour, water and salt.",
]


@pytest.fixture(scope="module")
def image() -> Image:
    log_dir = ROOT / "test-output" / "container"
    log_dir.mkdir(parents=True, exist_ok=True)
    built = build_image(TAG, log_dir / "build.log")
    report(f"image {TAG}: {built.size_bytes / 1e6:.0f} MB, built in {built.build_seconds:.0f} s (podman build)")
    return built


@pytest.fixture(scope="module")
def extra_model(tiny_models: dict[str, Path]) -> Iterator[Path]:
    """A model outside the image (the tiny dense one, onnx) and its catalogue, readable by the container's user."""
    root = Path(tempfile.mkdtemp(prefix="embedserve-extra-"))
    try:
        shutil.copytree(tiny_models["dense"], root / "tiny-dense")
        catalogue = {"models": {"tiny-onnx": {"name": "./tiny-dense", "type": "embeddings", "backend": "onnx"}}}
        (root / "models.yaml").write_text(yaml.safe_dump(catalogue))
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def container(image: Image, extra_model: Path) -> Iterator[Container]:
    volume = f"embedserve-test-data-{uuid.uuid4().hex[:8]}"
    run_args = [
        "--read-only",
        "--read-only-tmpfs=false",  # only what is listed below is writable, as with docker --read-only
        "--tmpfs",
        "/tmp",
        "--volume",
        f"{volume}:/data",
        "--volume",
        f"{extra_model}:/models:ro",
        "--env",
        f"EMBEDSERVE_SHUTDOWN_GRACE={SHUTDOWN_GRACE}",
        "--stop-timeout",
        str(SHUTDOWN_GRACE + 15),
        "--health-interval",
        "disable",  # no systemd timer here: the test runs the healthcheck itself
    ]
    try:
        with running_container(image.tag, run_args) as running:
            running.ready_seconds = wait_ready(running, timeout=120)
            load = f"load average {running.load_before:.1f} on {os.cpu_count()} cores"
            report(f"container: /ready answered 200 {running.ready_seconds:.1f} s after podman run ({load})")
            yield running
    finally:
        podman("volume", "rm", "--force", volume, check=False)


def test_ready_within_30_s_without_exporting(container: Container) -> None:
    # 30 s on a machine with its cores to itself; one already running n times its cores' worth of
    # work (the load average before `podman run`) gives every process about 1/n of a core: n x 30 s.
    budget = READY_WITHIN * max(1.0, container.load_before / (os.cpu_count() or 1))
    assert container.ready_seconds < budget, f"/ready took {container.ready_seconds:.1f} s (budget {budget:.0f} s)"
    logs = container.logs()
    assert "exporting to" not in logs, logs[-4000:]
    for model in (DENSE, SPARSE):  # the reranker (engine fusion) runs these two models: no export of its own
        assert f"model {model}: using the cached onnx int8 export /data/exports/" in logs, logs[-4000:]
    assert "Traceback" not in logs


def test_image_is_configured_as_documented(image: Image) -> None:
    data: dict[str, Any] = json.loads(podman("image", "inspect", image.tag).stdout)[0]
    config = data["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["embedserve-entrypoint"] and config["Cmd"] == ["serve"]
    assert "7860/tcp" in config["ExposedPorts"] and "/data" in config["Volumes"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["EMBEDSERVE_HOST"] == "0.0.0.0" and env["EMBEDSERVE_PORT"] == "7860"
    assert env["EMBEDSERVE_CONFIG"] == "/etc/embedserve/models.yaml" and env["HF_HUB_OFFLINE"] == "1"
    health = data.get("Healthcheck") or config["Healthcheck"]  # podman keeps it beside Config, docker inside
    assert "/health" in " ".join(health["Test"])


def test_runs_as_non_root_with_the_server_as_main_process(container: Container) -> None:
    pid = container.inspect("{{.State.Pid}}")
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {"1000"}, status
    # the entrypoint exec'd the server: the container's main process is embedserve, which gets SIGTERM
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"/opt/venv/bin/embedserve" in cmdline and b"serve" in cmdline, cmdline


def test_healthcheck_passes(container: Container) -> None:
    result = podman("healthcheck", "run", container.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_writes_only_to_data_and_tmp(container: Container) -> None:
    for path in ("/opt/embedserve/x", "/etc/embedserve/x", "/x"):
        result = container.exec("touch", path)
        assert result.returncode != 0 and "Read-only file system" in result.stderr, (path, result)
    for path in ("/data/x", "/tmp/x"):
        assert container.exec("touch", path).returncode == 0, path


def test_exports_another_model_into_the_data_volume(container: Container) -> None:
    result = container.exec("embedserve", "export", "--config", "/models/models.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exporting to onnx" in result.stdout + result.stderr
    listing = container.exec("ls", "-A", "/data/exports").stdout.split()
    assert any("tiny-dense-dense-onnx-" in name for name in listing), listing


def _answers(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=60) as client:
        dense = client.post("/v1/embeddings", json={"model": DENSE, "input": TEXTS})
        sparse = client.post("/api/v1/embed_sparse", json={"model": SPARSE, "input": TEXTS})
        rerank = client.post("/api/v1/rerank", json={"model": RERANK, "query": QUERY, "documents": DOCUMENTS})
    for response in (dense, sparse, rerank):
        assert response.status_code == 200, response.text
    return {
        "dense": [item["embedding"] for item in dense.json()["data"]],
        "sparse": sparse.json()["data"],
        "rerank": rerank.json()["results"],
    }


def test_answers_equal_the_server_from_the_checkout(container: Container, default_server: Server) -> None:
    from_image, from_checkout = _answers(container.url), _answers(default_server.url)
    assert from_image["dense"] == from_checkout["dense"]
    assert from_image["sparse"] == from_checkout["sparse"]
    assert from_image["rerank"] == from_checkout["rerank"]


def _inputs_computed(url: str, model: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    prefix = f'embedserve_inputs_total{{model="{model}"}} '
    return next((float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_sigterm_answers_the_request_in_flight_and_exits_0(container: Container) -> None:
    """Last in the module: it stops the container."""
    texts = [f"Request in flight, text {i}: the quick brown fox jumps over the lazy dog." for i in range(400)]
    before = _inputs_computed(container.url, DENSE)
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            response = httpx.post(f"{container.url}/v1/embeddings", json={"model": DENSE, "input": texts}, timeout=120)
            outcome["status"], outcome["body"] = response.status_code, response.json()
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = repr(exc)
        outcome["at"] = time.monotonic()

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while _inputs_computed(container.url, DENSE) == before:  # the request's first inputs are computed
        assert time.monotonic() < deadline and sender.is_alive(), outcome
        time.sleep(0.05)
    in_flight = _inputs_computed(container.url, DENSE) - before
    stop_started = time.monotonic()
    podman("stop", "--time", str(SHUTDOWN_GRACE + 15), container.name, timeout=SHUTDOWN_GRACE + 60)
    stop_seconds = time.monotonic() - stop_started
    sender.join(60)

    report(f"container: podman stop took {stop_seconds:.1f} s with a request of {len(texts)} texts in flight")
    assert in_flight < len(texts), "the request was done before SIGTERM: make it larger"
    assert outcome.get("status") == 200, outcome
    assert len(outcome["body"]["data"]) == len(texts)
    assert outcome["at"] > stop_started
    assert container.inspect("{{.State.ExitCode}}") == "0", container.logs()[-4000:]
    assert stop_seconds < SHUTDOWN_GRACE + 5
    assert "Traceback" not in container.logs()

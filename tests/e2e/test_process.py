"""Server lifecycle with its own processes: lazy loading, unload and load, clean exit on SIGTERM."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from helpers.server import ROOT, Server, running_server, stop

from embedserve.priority import DEFAULT_NICE

CONFIG = ROOT / "models.yaml"
DENSE = "all-minilm-l6-v2"


def _embed(client: httpx.Client) -> httpx.Response:
    return client.post("/api/v1/embeddings", json={"model": DENSE, "input": "hello world"})


def _accepts_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


def _thread_nice_values(pid: int) -> dict[int, int]:
    """The nice value of each thread of process ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            stat = (task / "stat").read_text()
            values[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    return values


def _assert_compute_niced(before: dict[int, int], after: dict[int, int], pid: int) -> None:
    """The threads the model's load started (its batch threads, ONNX Runtime's pool) run at the
    default compute_nice over the server's 0; the event loop's thread and those from before stay at 0."""
    assert after[pid] == 0 and before[pid] == 0
    assert all(after.get(tid, 0) == 0 for tid in before), (before, after)
    new = {tid: nice for tid, nice in after.items() if tid not in before}
    assert sum(nice == DEFAULT_NICE for nice in new.values()) >= 2, new  # 2 lanes at least (streams on 2+ cores)
    assert set(new.values()) <= {0, DEFAULT_NICE}, new


def test_lazy_load_unload_and_load_again(tmp_path: Path) -> None:
    with (
        running_server(
            CONFIG, extra_args=("--lazy",), wait_for_models=False, log_path=tmp_path / "server.log"
        ) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        health = client.get("/health").json()
        assert health["loaded_models"] == 0 and health["total_models"] == 3, health
        assert client.get(f"/api/v1/models/{DENSE}").json()["state"] == "not_loaded"

        before = _thread_nice_values(server.process.pid)
        first = _embed(client)  # loads the dense model on demand
        assert first.status_code == 200, first.text
        assert len(first.json()["data"][0]["embedding"]) == 384
        _assert_compute_niced(before, _thread_nice_values(server.process.pid), server.process.pid)
        assert client.get(f"/api/v1/models/{DENSE}").json()["state"] == "ready"
        assert client.get("/health").json()["loaded_models"] == 1

        unloaded = client.post(f"/api/v1/models/{DENSE}/unload")
        assert unloaded.status_code == 200, unloaded.text
        assert unloaded.json()["state"] == "unloaded" and not unloaded.json()["loaded"]

        refused = _embed(client)
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "model_unavailable" and error["param"] == "model"
        assert f"POST /api/v1/models/{DENSE}/load" in error["message"]

        loaded = client.post(f"/api/v1/models/{DENSE}/load")
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["state"] == "ready" and loaded.json()["loaded"]
        again = _embed(client)
        assert again.status_code == 200, again.text
        assert again.json()["data"][0]["embedding"] == first.json()["data"][0]["embedding"]

    assert server.process.poll() is not None, "the server outlived its context manager"
    assert not _accepts_connections(server.url), "the port still accepts connections"


@pytest.fixture(scope="module")
def sigtermed(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """A lazy server that has loaded a model (and started its worker thread), then got SIGTERM."""
    log_path = tmp_path_factory.mktemp("sigterm") / "server.log"
    with running_server(CONFIG, extra_args=("--lazy",), log_path=log_path) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            response = _embed(client)
        assert response.status_code == 200, response.text
        stop(server.process)  # SIGTERM; SIGKILL only after 30 s
    return server


def test_sigterm_shuts_down_gracefully(sigtermed: Server) -> None:
    assert sigtermed.process.returncode == 0, sigtermed.log()[-4000:]
    log = sigtermed.log()
    assert "Application shutdown complete" in log and "Finished server process" in log
    assert "Traceback" not in log

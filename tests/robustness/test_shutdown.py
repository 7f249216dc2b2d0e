"""SIGTERM with a real process: queued work finishes within the grace period and the process exits
0; SIGTERM while models are still loading exits 0 too. Neither leaves a traceback."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from helpers.server import running_server
from robustness.conftest import SERVER_ENV, write_catalog
from robustness.support import AUTH, count, record


def _refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return False
    except OSError:
        return True


def test_sigterm_finishes_queued_work_then_exits_0(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "models.yaml", tiny_models)
    env = {**SERVER_ENV, "EMBEDSERVE_SHUTDOWN_GRACE": "60"}
    documents = [f"document number {i} " * 12 for i in range(120)]
    with running_server(catalog, env=env, log_path=tmp_path / "server.log") as server:

        def rerank(i: int) -> int:
            body = {"model": "tiny-rerank", "query": f"query {i}", "documents": documents}
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as client:
                return client.post("/api/v1/rerank", json=body).status_code

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(rerank, i) for i in range(12)]
            deadline = time.monotonic() + 30
            with httpx.Client(base_url=server.url, headers=AUTH) as probe:
                while time.monotonic() < deadline:
                    if probe.get("/api/v1/models/tiny-rerank").json()["stats"]["queue_depth"] > 200:
                        break
                    time.sleep(0.02)
                else:
                    pytest.fail("the requests never queued up")
            sent_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            refused_new = _refuses_connections(server.url)
            statuses = [f.result() for f in futures]
        server.process.wait(60)
        exit_seconds = time.monotonic() - sent_at
    count(statuses, "shutdown")
    record("shutdown_graceful", {"requests_in_flight": len(statuses), "exit_seconds": round(exit_seconds, 1)})
    assert statuses == [200] * len(statuses), statuses
    assert refused_new, "the server still accepted connections after SIGTERM"
    assert server.process.returncode == 0
    log = server.log()
    assert "Traceback" not in log and "Finished server process" in log


def test_sigterm_while_models_load_exits_0(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    dense = str(tiny_models["dense"])
    copies = {f"copy-{i}": {"name": dense, "type": "embeddings", "device": "cpu"} for i in range(8)}
    catalog = write_catalog(tmp_path / "models.yaml", tiny_models, **copies)
    with running_server(catalog, env=SERVER_ENV, log_path=tmp_path / "server.log", wait_for_models=False) as server:
        health = httpx.get(f"{server.url}/health").json()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(60)
    assert not health["startup_complete"], "the models had loaded before SIGTERM: the test proves nothing"
    assert server.process.returncode == 0, server.log()[-3000:]
    assert "Traceback" not in server.log()

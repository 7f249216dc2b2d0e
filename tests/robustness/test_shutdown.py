"""SIGTERM with a real process: queued work finishes within the grace period and the process exits
0; SIGTERM while models are still loading exits 0 too. Neither leaves a traceback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
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

from embedserve.api.shutdown import MESSAGE


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


def test_sigterm_under_more_work_than_the_grace_answers_503_not_500(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """200 clients with 16 long texts each, and 20 bodies still arriving (slowly, but above the
    minimum rate), then SIGTERM with a 2 s grace: every request gets 200 or a 503 in its dialect,
    none a 500, and the process exits 0 within the grace plus a few seconds."""
    catalog = write_catalog(tmp_path / "models.yaml", tiny_models)
    env = {**SERVER_ENV, "EMBEDSERVE_SHUTDOWN_GRACE": "2", "EMBEDSERVE_REQUEST_TIMEOUT": "0"}
    texts = [f"text {i} " + "many words to embed " * 30 for i in range(16)]
    with running_server(catalog, env=env, log_path=tmp_path / "server.log") as server:

        async def storm() -> list[tuple[str, int, dict[str, object]]]:
            limits = httpx.Limits(max_connections=250)
            async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60, limits=limits) as client:

                async def one(i: int) -> tuple[str, int, dict[str, object]]:
                    path, body = (
                        ("/v1/embeddings", {"model": "tiny-dense", "input": texts})
                        if i % 2
                        else ("/embed", {"inputs": texts})
                    )
                    response = await client.post(path, json=body)
                    return path, response.status_code, response.json() if response.status_code != 200 else {}

                async def slow_body() -> tuple[str, int, dict[str, object]]:
                    """A body sent at 8 KB/s (above the minimum rate), read as raw HTTP: an answer that
                    comes before the body is complete is read as such."""
                    payload = json.dumps(
                        {"model": "tiny-dense", "input": [f"{j} " + "slow " * 1999 for j in range(40)]}
                    ).encode()
                    port = int(server.url.rsplit(":", 1)[1])
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    head = (
                        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {AUTH['Authorization']}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
                    )
                    writer.write(head.encode())

                    async def trickle() -> None:
                        with contextlib.suppress(OSError):
                            for start in range(0, len(payload), 4096):
                                writer.write(payload[start : start + 4096])
                                await writer.drain()
                                await asyncio.sleep(0.5)

                    sending = asyncio.create_task(trickle())
                    try:
                        answer = await reader.read()
                    except ConnectionResetError:  # closed with the rest of the body unread: the answer can be lost
                        answer = b"HTTP/1.1 000 reset\r\n\r\n{}"
                    sending.cancel()
                    writer.close()
                    status = int(answer.split(b" ", 2)[1]) if answer else 0
                    body = json.loads(answer.partition(b"\r\n\r\n")[2]) if status not in (0, 200) else {}
                    return "slow-body", status, body

                tasks = [asyncio.create_task(one(i)) for i in range(200)]
                tasks += [asyncio.create_task(slow_body()) for _ in range(20)]
                async with httpx.AsyncClient(base_url=server.url, headers=AUTH) as probe:
                    while (await probe.get("/api/v1/models/tiny-dense")).json()["stats"]["queue_depth"] < 400:
                        await asyncio.sleep(0.05)
                nonlocal sent_at
                sent_at = time.monotonic()
                server.process.send_signal(signal.SIGTERM)
                return list(await asyncio.gather(*tasks))

        sent_at = 0.0
        results = asyncio.run(storm())
        server.process.wait(30)
        exit_seconds = time.monotonic() - sent_at
    statuses = [status for _, status, _ in results]
    resets = [path for path, status, _ in results if status == 0]
    assert set(resets) <= {"slow-body"}, "a request with its body sent got no answer"
    statuses = [s for s in statuses if s]
    count(statuses, "shutdown", frozenset({503}))
    by_status = {s: statuses.count(s) for s in sorted(set(statuses))}
    record(
        "shutdown_over_grace",
        {"requests": len(statuses), "statuses": by_status, "exit_seconds": round(exit_seconds, 1)},
    )
    assert set(statuses) <= {200, 503}, by_status
    assert by_status.get(503, 0) > 0, f"the work fit in the grace: the test proves nothing ({by_status})"
    for path, status, body in results:
        if status == 503:
            if path == "/embed":
                assert body == {"error": MESSAGE, "error_type": "Unhealthy"}, body
            else:
                assert body["error"]["code"] == "shutting_down", body  # type: ignore[index]
    assert server.process.returncode == 0
    assert exit_seconds < 2 + 12, f"exit took {exit_seconds:.1f} s"  # grace + a few seconds, on a busy machine
    assert "Traceback" not in server.log()

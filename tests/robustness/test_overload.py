"""Overload: far more concurrent requests than a model's queue holds. Every answer is 200, 429
(queue full, with Retry-After) or 503 (deadline passed in the queue); /health stays fast; memory
stays bounded; the server serves normally afterwards."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import httpx
from helpers.server import Server
from robustness.support import AUTH, count, record, rss_mib

CONCURRENT = 300
TEXT = "an overloaded server must still answer every request with a clear status " * 4


def _probe(url: str, stop: threading.Event) -> list[float]:
    """/health from its own thread and connection, as a load balancer would probe it."""
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/health")  # connect before the storm
        while not stop.is_set():
            started = time.perf_counter()
            assert client.get("/health").status_code == 200
            times.append(time.perf_counter() - started)
            time.sleep(0.05)
    return times


async def _storm(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT + 10, max_keepalive_connections=CONCURRENT + 10)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            body = {"model": "small_queue", "input": [f"{i} {TEXT}"] * 4}
            return await client.post("/v1/embeddings", json=body)

        return list(await asyncio.gather(*(one(i) for i in range(CONCURRENT))))


def test_overload_answers_every_request_and_recovers(robust_server: Server, client: httpx.Client) -> None:
    rss_before = rss_mib(robust_server)
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        probing = pool.submit(_probe, robust_server.url, stop)
        time.sleep(0.2)
        responses = asyncio.run(_storm(robust_server.url))
        stop.set()
        health_times = probing.result()
    rss_after = rss_mib(robust_server)
    statuses = [r.status_code for r in responses]
    count(statuses, "overload", frozenset({503}))
    by_status = {s: statuses.count(s) for s in sorted(set(statuses))}
    record("overload", {"concurrent": CONCURRENT, "max_queue": 16, "statuses": by_status})
    record("overload_health_ms", {"probes": len(health_times), "max": round(max(health_times) * 1000, 1)})
    record("overload_rss_mib", [round(rss_before, 1), round(rss_after, 1)])
    assert set(statuses) <= {200, 429, 503}, by_status
    assert by_status.get(429, 0) > 0, f"the queue bound never engaged: {by_status}"
    assert by_status.get(200, 0) > 0, by_status
    for response in responses:
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1"
            assert "is busy" in response.json()["error"]["message"]
    assert len(health_times) >= 5 and max(health_times) < 1.0, f"/health took up to {max(health_times):.2f} s"
    assert rss_after - rss_before < 300, f"RSS grew from {rss_before:.0f} to {rss_after:.0f} MiB"
    stats = client.get("/api/v1/models/small_queue").json()["stats"]
    assert stats["queue_depth"] == 0
    again = client.post("/v1/embeddings", json={"model": "small_queue", "input": ["after the storm"]})
    assert again.status_code == 200

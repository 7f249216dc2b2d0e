"""Overload: far more concurrent requests than a model's queue holds. Every answer is 200, 429
(queue full, with Retry-After) or 503 (deadline passed in the queue); /health stays fast; memory
stays bounded; the server serves normally afterwards.

And far more work than a model computes before the deadline (admission by estimated wait): the
requests it cannot finish in time are refused at once with 429 and a Retry-After, the ones it
admits are answered 200, none 503."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.server import Server, running_server
from robustness.conftest import SERVER_ENV, write_catalog
from robustness.support import AUTH, count, record, rss_mib

CONCURRENT = 300
TEXT = "an overloaded server must still answer every request with a clear status " * 4


# /health every 50 ms from a process of its own (as a load balancer probes it, and so that the storm's
# client, in this process, does not delay it), until its stdin closes; then its latencies as JSON.
PROBE = """
import json, select, sys, time, httpx
times = []
with httpx.Client(base_url=sys.argv[1], timeout=30) as client:
    client.get("/health")
    print("connected", flush=True)
    while not select.select([sys.stdin], [], [], 0.05)[0]:
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        times.append(time.perf_counter() - started)
print(json.dumps(times))
"""


def _probing(url: str) -> subprocess.Popen[str]:
    probe = subprocess.Popen(
        [sys.executable, "-c", PROBE, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert probe.stdout is not None and probe.stdout.readline().strip() == "connected"
    return probe


def _probed(probe: subprocess.Popen[str]) -> list[float]:
    out, _ = probe.communicate(timeout=60)  # closes its stdin: it stops
    assert probe.returncode == 0, out
    return list(json.loads(out.splitlines()[-1]))


async def _storm(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT + 10, max_keepalive_connections=CONCURRENT + 10)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            # four different texts: one repeated in a request is computed once (the embedding cache)
            body = {"model": "small_queue", "input": [f"{i}.{j} {TEXT}" for j in range(4)]}
            return await client.post("/v1/embeddings", json=body)

        return list(await asyncio.gather(*(one(i) for i in range(CONCURRENT))))


def test_overload_answers_every_request_and_recovers(robust_server: Server, client: httpx.Client) -> None:
    rss_before = rss_mib(robust_server)
    probe = _probing(robust_server.url)
    responses = asyncio.run(_storm(robust_server.url))
    health_times = _probed(probe)
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
            assert int(response.headers["retry-after"]) >= 1
            assert "is busy" in response.json()["error"]["message"]
    assert len(health_times) >= 5 and max(health_times) < 1.0, f"/health took up to {max(health_times):.2f} s"
    assert rss_after - rss_before < 300, f"RSS grew from {rss_before:.0f} to {rss_after:.0f} MiB"
    stats = client.get("/api/v1/models/small_queue").json()["stats"]
    assert stats["queue_depth"] == 0
    again = client.post("/v1/embeddings", json={"model": "small_queue", "input": ["after the storm"]})
    assert again.status_code == 200


FLOOD = 300  # concurrent requests of FLOOD_TEXTS texts of about 250 tokens: far more work than the
FLOOD_TEXTS = 16  # model below computes in its 3 s deadline, one text a pass, on any CPU


@pytest.fixture(scope="module")
def flood_server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The tiny dense model computing one text a pass, so a flood is far more than a 3 s deadline allows."""
    root = tmp_path_factory.mktemp("flood")
    one_by_one = {"name": str(tiny_models["dense"]), "type": "embeddings", "device": "cpu"}
    one_by_one["batching"] = {"max_batch_size": 1, "passes": 1}
    catalog = write_catalog(root / "models.yaml", tiny_models, one_by_one=one_by_one)
    env = {**SERVER_ENV, "EMBEDSERVE_REQUEST_TIMEOUT": "3"}
    with running_server(catalog, env=env, log_path=root / "server.log") as server:
        yield server


async def _flood(url: str, model: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=FLOOD + 10, max_keepalive_connections=FLOOD + 10)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            texts = [f"{i} {j} {TEXT * 3}" for j in range(FLOOD_TEXTS)]
            return await client.post("/v1/embeddings", json={"model": model, "input": texts})

        return list(await asyncio.gather(*(one(i) for i in range(FLOOD))))


def test_a_flood_is_admitted_as_far_as_the_deadline_allows_and_the_rest_refused_at_once(
    flood_server: Server,
) -> None:
    with httpx.Client(base_url=flood_server.url, headers=AUTH, timeout=60) as client:
        warm = client.post("/v1/embeddings", json={"model": "one_by_one", "input": ["measure the model once"]})
        assert warm.status_code == 200
        responses = asyncio.run(_flood(flood_server.url, "one_by_one"))
        statuses = [r.status_code for r in responses]
        by_status = {s: statuses.count(s) for s in sorted(set(statuses))}
        count(statuses, "flood")
        record("flood", {"concurrent": FLOOD, "texts": FLOOD_TEXTS, "statuses": by_status})
        assert set(statuses) <= {200, 429}, f"no 503: an admitted request finishes before its deadline: {by_status}"
        assert by_status.get(200, 0) > 0 and by_status.get(429, 0) > 0, by_status
        for response in responses:
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                assert "deadline" in response.json()["error"]["message"]
            else:
                assert len(response.json()["data"]) == FLOOD_TEXTS
        again = client.post("/v1/embeddings", json={"model": "one_by_one", "input": ["after the flood"]})
        assert again.status_code == 200

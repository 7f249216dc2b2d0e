"""A bounded soak: steady mixed traffic for a minute on loopback; no errors, RSS growth under 10%."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
from helpers.server import Server
from robustness.support import AUTH, count, record, rss_mib

SECONDS = float(os.environ.get("EMBEDSERVE_SOAK_SECONDS", "60"))
WARMUP = 8.0
CLIENTS = 4
REQUESTS = [
    ("/v1/embeddings", {"model": "tiny-dense", "input": ["soak text {i}", "another {i} text"] * 4}),
    ("/api/v1/embed_sparse", {"model": "tiny-sparse", "input": ["sparse soak {i}"]}),
    ("/api/v1/rerank", {"model": "tiny-rerank", "query": "q {i}", "documents": ["a {i}", "b", "c"]}),
    ("/embed", {"inputs": ["tei soak {i}"]}),
    ("/v2/rerank", {"model": "tiny-similarity", "query": "q", "documents": ["x {i}", "y"]}),
]


def _fill(body: object, i: int) -> object:
    if isinstance(body, str):
        return body.replace("{i}", str(i))
    if isinstance(body, list):
        return [_fill(b, i) for b in body]
    if isinstance(body, dict):
        return {k: _fill(v, i) for k, v in body.items()}
    return body


async def _traffic(url: str, until: float) -> list[int]:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:

        async def worker(w: int) -> list[int]:
            statuses, i = [], w
            while time.monotonic() < until:
                path, body = REQUESTS[i % len(REQUESTS)]
                statuses.append((await client.post(path, json=_fill(body, i))).status_code)
                i += CLIENTS
            return statuses

        per_worker = await asyncio.gather(*(worker(w) for w in range(CLIENTS)))
    return [s for statuses in per_worker for s in statuses]


def test_soak_has_no_errors_and_bounded_memory(robust_server: Server) -> None:
    warm = asyncio.run(_traffic(robust_server.url, time.monotonic() + WARMUP))
    before = rss_mib(robust_server)
    statuses = asyncio.run(_traffic(robust_server.url, time.monotonic() + SECONDS))
    after = rss_mib(robust_server)
    count(warm + statuses, "soak")
    growth = (after - before) / before
    record(
        "soak",
        {
            "seconds": SECONDS,
            "clients": CLIENTS,
            "requests": len(statuses),
            "errors": sum(s != 200 for s in statuses),
            "rss_mib_before": round(before, 1),
            "rss_mib_after": round(after, 1),
            "rss_growth_percent": round(growth * 100, 2),
        },
    )
    assert len(statuses) > 100
    assert all(s == 200 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    assert growth < 0.10, f"RSS grew {growth:.1%} ({before:.0f} → {after:.0f} MiB)"

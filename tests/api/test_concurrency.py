"""Concurrent requests to one model and to several are safe and give the sequential answers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio

REQUESTS: list[tuple[str, dict[str, Any]]] = (
    [
        ("/api/v1/embeddings", {"model": "tiny-dense", "input": [f"text number {i}" for i in range(i % 5 + 1)]})
        for i in range(12)
    ]
    + [("/api/v1/embed_sparse", {"model": "tiny-sparse", "input": [f"sparse {i}", "shared words"]}) for i in range(6)]
    + [
        ("/api/v1/rerank", {"model": "tiny-rerank", "query": f"query {i}", "documents": ["a", "b", f"c {i}"]})
        for i in range(6)
    ]
)


async def test_concurrent_equals_sequential(client: httpx.AsyncClient) -> None:
    sequential = [(await client.post(path, json=body)).json() for path, body in REQUESTS]
    responses = await asyncio.gather(*(client.post(path, json=body) for path, body in REQUESTS * 2))
    assert all(r.status_code == 200 for r in responses)
    concurrent = [r.json() for r in responses]
    for got, want in zip(concurrent, sequential * 2, strict=True):
        _assert_close(got, want)


def _assert_close(got: Any, want: Any) -> None:
    """Equal structure and values; floats to 1e-5 (a batch's padding changes the last bits)."""
    if isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5)
    elif isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            _assert_close(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_close(a, b)
    else:
        assert got == want


async def test_health_answers_while_models_compute(client: httpx.AsyncClient) -> None:
    work = [
        asyncio.ensure_future(
            client.post("/api/v1/embeddings", json={"model": "tiny-dense", "input": [f"x {i} {j}" for j in range(16)]})
        )
        for i in range(8)
    ]
    health = await client.get("/health")
    assert health.status_code == 200
    assert all(r.status_code == 200 for r in await asyncio.gather(*work))

"""Batching through the app: the queue bound answers 429 with Retry-After; the listing shows limits and counters."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from embedserve import admission
from embedserve.engines.runtimes import default_threads

pytestmark = pytest.mark.anyio


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_past_the_queue_bound_the_server_answers_429_with_retry_after(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "RETRY_SPREAD", 0)  # the estimate itself (admission.spread)
    registry = app.state.registry
    handle = registry.get("queued")
    await handle.load()
    gate = registry.device_gate(handle.engine.device)
    gate.acquire(gate.capacity)  # the batch thread takes a batch and waits here: the queue fills up behind it
    try:
        first = asyncio.ensure_future(client.post("/api/v1/embeddings", json={"model": "queued", "input": ["a"]}))
        await _until(lambda: handle.batcher.running == 1)
        queued = asyncio.ensure_future(
            client.post("/api/v1/embeddings", json={"model": "queued", "input": ["b", "c", "d"]})
        )
        await _until(lambda: handle.batcher.queue_depth == 3)
        refused = await client.post("/api/v1/embeddings", json={"model": "queued", "input": ["e", "f"]})
    finally:
        gate.release(gate.capacity)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "overloaded" and error["type"] == "rate_limit_error"
    assert "3 inputs are queued (the limit is 4)" in error["message"]
    assert (await first).status_code == 200 and (await queued).status_code == 200


async def test_work_that_would_miss_its_deadline_is_refused_with_retry_after_in_every_dialect(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = app.state.registry
    handle = registry.get("queued")
    await handle.load()
    monkeypatch.setattr(handle, "cache", None)  # texts an earlier test sent must reach the batch thread held below
    estimator = handle.batcher.estimator
    for _ in range(100):  # the model as measured: 0.3 tokens a second, so within the 60 s deadline's budget
        estimator.observe_pass(3, 10.0)  # (60%: 36 s, 10.8 tokens) a short text may wait, a long one not
    gate = registry.device_gate(handle.engine.device)
    gate.acquire(gate.capacity)  # hold the batch thread: the work stays ahead of the requests below
    try:
        # texts no other test sends: a cached one would not reach the model (the embedding cache)
        body = {"model": "queued", "input": ["held"]}
        first = asyncio.ensure_future(client.post("/api/v1/embeddings", json=body))
        await _until(lambda: handle.batcher.running == 1)
        body = {"model": "queued", "input": ["queued"]}
        queued = asyncio.ensure_future(client.post("/api/v1/embeddings", json=body))
        await _until(lambda: handle.batcher.queue_depth == 1)
        long = "a text long enough to be refused behind the held work " * 4
        openai = await client.post("/v1/embeddings", json={"model": "queued", "input": [long]})
        cohere = await client.post(
            "/v2/embed",
            json={"model": "queued", "texts": [long], "input_type": "search_query", "embedding_types": ["float"]},
        )
        tei = await client.post("/embed", json={"model": "queued", "inputs": [long]})
        tokenized = await client.post("/tokenize", json={"model": "queued", "inputs": [long]})
    finally:
        gate.release(gate.capacity)
        for _ in range(100):  # fast again for the tests after this one
            estimator.observe_pass(1000, 0.001)
    for refused in (openai, cohere, tei):
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1  # tokens ahead / 0.3 tokens a second, less the budget
    assert "deadline" in openai.json()["error"]["message"] and openai.json()["error"]["code"] == "overloaded"
    assert "deadline" in cohere.json()["message"]
    assert "deadline" in tei.json()["error"] and tei.json()["error_type"] == "Overloaded"
    assert tokenized.status_code == 200, "/tokenize does no model work: the model's wait does not refuse it"
    assert (await first).status_code == 200 and (await queued).status_code == 200


async def test_a_request_bigger_than_the_queue_is_413_not_429(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/embeddings", json={"model": "queued", "input": [f"x{i}" for i in range(5)]})
    assert response.status_code == 413
    assert "queues at most 4" in response.json()["error"]["message"]


async def test_the_listing_shows_batching_limits_and_counters(client: httpx.AsyncClient) -> None:
    before = (await client.get("/api/v1/models/tiny-dense")).json()["stats"]
    response = await client.post("/api/v1/embeddings", json={"model": "tiny-dense", "input": ["a", "b", "c"]})
    assert response.status_code == 200
    info = (await client.get("/api/v1/models/tiny-dense")).json()
    assert info["batching"] == {
        "max_batch_size": 32,
        "max_batch_tokens": 1024,
        "max_wait_ms": 2.0,
        "max_queue": 8192,
        "passes": 2 if default_threads() > 1 else 1,  # torch on a CPU: two passes side by side (gate.py)
    }
    assert info["stats"]["inputs_computed"] == before["inputs_computed"] + 3
    assert info["stats"]["batches"] == before["batches"] + 1
    assert info["stats"]["queue_depth"] == 0

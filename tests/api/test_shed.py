"""The early answers (api/shed.py): the 429 of a model that cannot keep up, given before routing
in every dialect as the route gives it, and /health.

The models are held: the device's gate is taken, so each model's batch thread waits inside its
first pass with its work queued behind it, and each model's throughput is set so that the work
ahead takes 100.5 s, more than the 36 s a request may wait (60% of its 60 s deadline). Every
request that names one of them is refused; "the route's answer" is what the app gives with the
shed taken out (the request context around the layers the shed hands requests on to).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from helpers.app_client import app_client
from helpers.server import ROOT
from helpers.tiny_models import FAKE_TOKENIZER
from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve import admission
from embedserve.api import create_app
from embedserve.api.request_context import RequestContextMiddleware
from embedserve.api.shed import COMPUTE_ROUTES, Shed
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
KEY = "sk-shed-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELD = ("held-dense", "held-sparse", "held-rerank")
AHEAD_SECONDS = 100.5  # the work ahead of every request, at the model's measured throughput
ONE_PASS = {"max_wait_ms": 0, "passes": 1}  # one batch thread to hold


def _catalog() -> Any:
    fake = {"name": FAKE_TOKENIZER, "engine": "fake", "batching": ONE_PASS}
    return parse_catalog(
        {
            "models": {
                "held-dense": {**fake, "type": "embeddings"},  # first: the default of the untyped TEI routes
                "held-sparse": {**fake, "type": "sparse-embeddings", "max_length": 64},
                "held-rerank": {**fake, "type": "rerank", "max_length": 64},
                "burst": {**fake, "type": "embeddings"},
                # no batcher of its own (as a model in Ray replicas has none here): its models judge it
                "fused": {
                    "type": "rerank",
                    "engine": "fusion",
                    "fuse": {"dense": "held-dense", "sparse": "held-sparse"},
                },
            }
        },
        ROOT,
    )


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(api_keys=KEY, max_body_bytes=4096), _catalog())


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as c:
        c.headers.update(AUTH)
        yield c


@pytest.fixture(scope="module")
async def held(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Every held model busy for 100.5 s of work, until the module's tests are done."""
    registry = app.state.registry
    handles = [registry.get(model) for model in HELD]
    gate = registry.device_gate(handles[0].engine.device)  # one gate: the fake engines all run on the CPU
    gate.acquire(gate.capacity)
    work = []
    try:
        for handle in handles:
            units = handle.engine.tokenizer.encode(["a long text to hold the model " * 40] * 8)
            work.append(asyncio.ensure_future(handle.submit(units)))  # no request: no deadline, never dropped
            await _until(lambda h=handle: h.batcher.running > 0)  # one unit in the held pass, the rest queued
            handle.batcher.estimator.observe_pass(sum(u.cost for u in units), AHEAD_SECONDS)  # its first measure
        yield
    finally:
        gate.release(gate.capacity)
        await asyncio.gather(*work)


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


def without_shed(app: FastAPI) -> ASGIApp:
    """The app with the shed taken out: the request context (the deadline) around the layers the
    shed hands requests on to, down to the routes and their error handlers."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, Shed):
        layer = layer.app
    inner = RequestContextMiddleware(layer.app, timeout=app.state.settings.request_timeout)

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        await inner({**scope, "app": app}, receive, send)

    return routed


@pytest.fixture(scope="module")
async def route(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A client of :func:`without_shed`: what the routes answer themselves."""
    transport = httpx.ASGITransport(app=without_shed(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as c:
        yield c


DIALECTS = [
    pytest.param("/v1/embeddings", {"model": "held-dense", "input": ["hi"]}, {}, id="openai"),
    pytest.param("/v1/embeddings", {"model": "held-dense", "input": "hi", "task": "retrieval.query"}, {}, id="jina"),
    pytest.param("/api/v1/embeddings", {"input": ["hi", "there"]}, {}, id="native-default-model"),
    pytest.param("/api/v1/embed_sparse", {"model": "held-sparse", "input": "hi"}, {}, id="native-sparse"),
    pytest.param("/api/v1/rerank", {"model": "held-rerank", "query": "q", "documents": ["d"]}, {}, id="native-rerank"),
    pytest.param("/v1/embed", {"model": "held-dense", "texts": ["hi"]}, {}, id="cohere-v1-embed"),
    pytest.param(
        "/v2/embed",
        {"model": "held-dense", "texts": ["hi"], "input_type": "search_query", "embedding_types": ["float"]},
        {},
        id="cohere-v2-embed",
    ),
    pytest.param("/v1/rerank", {"query": "q", "documents": ["d", {"text": "e"}]}, {}, id="cohere-v1-jina-rerank"),
    pytest.param("/v2/rerank", {"model": "held-rerank", "query": "q", "documents": ["d"]}, {}, id="cohere-v2-rerank"),
    pytest.param("/embed", {"inputs": "hi"}, {}, id="tei-embed"),
    pytest.param("/embed", {"inputs": ["hi"]}, {"x-model": "held-dense"}, id="tei-embed-x-model"),
    pytest.param("/embed_sparse", {"inputs": ["hi"]}, {}, id="tei-sparse"),
    pytest.param("/rerank", {"query": "q", "texts": ["d"]}, {}, id="tei-rerank"),
    pytest.param("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}, {}, id="tei-similarity"),
    pytest.param("/", {"inputs": "hi"}, {}, id="tei-predict"),
]


@pytest.mark.usefixtures("held")
@pytest.mark.parametrize(("path", "body", "headers"), DIALECTS)
async def test_a_busy_model_is_refused_before_routing_as_its_route_refuses(
    client: httpx.AsyncClient,
    route: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admission, "RETRY_SPREAD", 0)  # the estimate itself, to compare the two
    early = await client.post(path, json=body, headers=headers)
    routed = await route.post(path, json=body, headers=headers)
    assert routed.status_code == 429, routed.text
    assert early.status_code == 429, early.text
    assert early.json() == routed.json()
    assert early.headers["retry-after"] == routed.headers["retry-after"] == "65"  # 100.5 s ahead - 36 s, rounded up
    assert early.headers["retry-after-ms"] == routed.headers["retry-after-ms"] == "65000"
    assert early.headers["content-type"] == routed.headers["content-type"]
    assert "x-request-id" in early.headers
    # the route refuses in the model's admission, on the way to its tokenizer; the shed before routing
    assert "x-tokenization-time" in routed.headers and "x-tokenization-time" not in early.headers


@pytest.mark.usefixtures("held")
async def test_the_clients_refused_together_are_told_to_come_back_at_different_times(
    client: httpx.AsyncClient, route: httpx.AsyncClient
) -> None:
    body = {"model": "held-dense", "input": ["hi"]}
    for answering in (client, route):  # the shed's refusals and the route's own
        refused = [await answering.post("/v1/embeddings", json=body) for _ in range(40)]
        assert {r.status_code for r in refused} == {429}
        seconds = [int(r.headers["retry-after"]) for r in refused]
        # the estimate (65 s), plus up to half of it again: 40 clients are not all sent back in the same second
        assert min(seconds) >= 65 and max(seconds) <= 65 + 33, seconds
        assert len(set(seconds)) > 1, seconds
        # and to the millisecond (OpenAI's clients read Retry-After-Ms first), within that second
        ms = [int(r.headers["retry-after-ms"]) for r in refused]
        assert [m // 1000 for m in ms] == seconds, ms
        assert len(set(ms)) == len(ms), ms
        assert all(f"retry in {s} s" in r.json()["error"]["message"] for r, s in zip(refused, seconds, strict=True))


@pytest.mark.usefixtures("held")
async def test_a_refusal_comes_before_the_body_is_validated(
    client: httpx.AsyncClient, route: httpx.AsyncClient
) -> None:
    body = {"model": "held-dense", "input": ["hi"], "dimensions": "many"}
    assert (await route.post("/v1/embeddings", json=body)).status_code == 422  # the route validates first
    assert (await client.post("/v1/embeddings", json=body)).status_code == 429


PASSED_ON = [
    pytest.param("/v1/embeddings", b'{"model": "nope", "input": ["hi"]}', {}, 404, id="unknown-model"),
    pytest.param("/v1/embeddings", b'{"model": "held-rerank", "input": ["hi"]}', {}, 400, id="wrong-type"),
    pytest.param("/v1/embeddings", b'{"model": "held-dense", "input": ["hi"', {}, 422, id="bad-json"),
    pytest.param("/v1/embeddings", b'["held-dense"]', {}, 422, id="not-an-object"),
    pytest.param("/v1/embeddings", b'{"model": 7, "input": ["hi"]}', {}, 422, id="model-not-a-string"),
    pytest.param("/v1/embeddings", b'{"model": "", "input": ["hi"]}', {}, 404, id="empty-model"),
    pytest.param("/embed", b'{"inputs": "hi"}', {"x-model": "nope"}, 404, id="tei-x-model-unknown"),
    pytest.param("/embed", b'{"model": "held-dense", "inputs": "hi"}', {"x-model": "burst"}, 413, id="tei-disagree"),
]


@pytest.mark.usefixtures("held")
@pytest.mark.parametrize(("path", "body", "headers", "status"), PASSED_ON)
async def test_what_the_shed_cannot_judge_goes_to_its_route(
    client: httpx.AsyncClient, route: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    headers = {"content-type": "application/json", **headers}
    early = await client.post(path, content=body, headers=headers)
    routed = await route.post(path, content=body, headers=headers)
    assert early.status_code == routed.status_code == status, early.text
    assert early.json() == routed.json()


@pytest.mark.usefixtures("held")
async def test_a_model_without_a_batcher_here_is_judged_where_its_work_goes(client: httpx.AsyncClient) -> None:
    refused = await client.post("/api/v1/rerank", json={"model": "fused", "query": "q", "documents": ["d"]})
    assert refused.status_code == 429, refused.text
    assert "x-tokenization-time" in refused.headers  # by its dense model's admission, behind the route
    assert "'held-dense' is busy" in refused.json()["error"]["message"]


@pytest.mark.usefixtures("held")
async def test_api_keys_and_body_limits_answer_first(client: httpx.AsyncClient) -> None:
    body = {"model": "held-dense", "input": ["hi"]}
    assert (await client.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer nope"})).status_code == 401
    too_large = {"model": "held-dense", "input": ["x" * 5000]}
    assert (await client.post("/v1/embeddings", json=too_large)).status_code == 413


@pytest.mark.usefixtures("held")
async def test_routes_without_model_work_are_not_refused(client: httpx.AsyncClient) -> None:
    tokenized = await client.post("/tokenize", json={"model": "held-dense", "inputs": "hi"})
    assert tokenized.status_code == 200, tokenized.text
    assert (await client.get("/api/v1/models/held-dense")).status_code == 200


@pytest.mark.usefixtures("held")
async def test_a_refusal_is_logged_and_counted_as_its_routes(client: httpx.AsyncClient) -> None:
    refused = await client.post("/api/v1/rerank", json={"model": "held-rerank", "query": "q", "documents": ["d"]})
    assert refused.status_code == 429
    text = (await client.get("/metrics")).text
    assert 'embedserve_requests_total{method="POST",model="held-rerank",route="/api/v1/rerank",status="429"}' in text


async def test_health_is_answered_as_its_route_answers(
    app: FastAPI, client: httpx.AsyncClient, route: httpx.AsyncClient
) -> None:
    early = await client.get("/health")
    routed = await route.get("/health")
    assert early.status_code == routed.status_code == 200
    assert early.json() == routed.json() == app.state.registry.health()
    assert early.headers["content-type"] == routed.headers["content-type"]
    head = await client.head("/health")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == early.headers["content-length"]
    assert "/health" in (await client.get("/openapi.json")).json()["paths"]  # the route stays documented


async def test_the_requests_admitted_before_count_in_the_verdict_at_the_door(
    app: FastAPI, client: httpx.AsyncClient, held: None
) -> None:
    """Six requests of one text arrive together for a model that computes it in 10.5 s: three fit
    in the 36 s a request may wait, and those admitted are counted (being tokenized, then queued
    behind the held pass) when the next is weighed at the door. They are let go (their clients
    hang up) at the end."""
    handle = app.state.registry.get("burst")
    text = "a text of a few tokens"
    tokens = handle.engine.tokenizer.encode([text])[0].original
    handle.batcher.estimator.observe_tokenized(len(text), tokens)  # as each request's tokenization will
    handle.batcher.estimator.observe_pass(tokens, 10.5)
    batcher = handle.batcher
    body = {"model": "burst", "input": [text]}
    sent = [asyncio.ensure_future(client.post("/v1/embeddings", json=body)) for _ in range(6)]
    try:
        await _until(lambda: sum(request.done() for request in sent) == 3)
        refused = [request.result() for request in sent if request.done()]
        assert [r.status_code for r in refused] == [429, 429, 429]
        assert not any("x-tokenization-time" in r.headers for r in refused)  # answered at the door
        await _until(lambda: batcher.queue_depth + batcher.running == 3)  # the three admitted, held
    finally:
        for request in sent:
            request.cancel()
        await asyncio.gather(*sent, return_exceptions=True)
    await _until(lambda: batcher.queue_depth == 0)  # dropped with their requests


def test_every_route_the_shed_judges_computes_with_a_model(app: FastAPI) -> None:
    posts = {path for path, operations in app.openapi()["paths"].items() if "post" in operations}
    assert set(COMPUTE_ROUTES) <= posts
    assert not {"/tokenize", "/decode"} & set(COMPUTE_ROUTES)

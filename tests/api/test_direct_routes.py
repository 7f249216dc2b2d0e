"""direct_routes.py: a POST to a compute route reaches its endpoint past Starlette's router, and
every answer is the one the router gives ("routed": the same app with the direct call taken out
of its middleware)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from helpers.app_client import app_client, take_out_middleware
from helpers.server import ROOT
from helpers.tiny_models import fake_catalog_data
from prometheus_client.parser import text_string_to_metric_families
from starlette.middleware.exceptions import ExceptionMiddleware

from embedserve import tasks
from embedserve.api import create_app
from embedserve.api.direct_routes import DirectRoutes
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
LIMITS = {"max_inputs": 4, "max_input_chars": 200}
TIMING = ("x-request-id", "x-total-time", "x-compute-time", "x-tokenization-time", "x-queue-time", "x-inference-time")


def _app() -> FastAPI:
    return create_app(Settings(**LIMITS), parse_catalog(fake_catalog_data(), ROOT))


@pytest.fixture(scope="module")
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    direct, routed = _app(), _app()
    async with app_client(direct) as a, app_client(routed) as b:
        take_out_middleware(routed, DirectRoutes)
        yield a, b


@pytest.fixture
def routed_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that went through Starlette's exception middleware (the router's way)."""
    paths: list[str] = []
    call = ExceptionMiddleware.__call__

    async def counting(self: ExceptionMiddleware, scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await call(self, scope, receive, send)

    monkeypatch.setattr(ExceptionMiddleware, "__call__", counting)
    return paths


JSON = {"content-type": "application/json"}
VALID: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    ("openai", "/v1/embeddings", {"model": "tiny-dense", "input": ["a", "b"]}, {}),
    (
        "openai, base64 and a prompt",
        "/v1/embeddings",
        {"model": "tiny-dense", "input": "a", "encoding_format": "base64", "options": {"prompt_name": "query"}},
        {},
    ),
    ("openai, token ids", "/v1/embeddings", {"model": "tiny-dense", "input": [101, 2054, 102]}, {}),
    ("native sparse", "/api/v1/embed_sparse", {"model": "tiny-sparse", "input": "a b"}, {}),
    ("native rerank", "/api/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a", "b"]}, {}),
    (
        "cohere embed",
        "/v2/embed",
        {"model": "tiny-dense", "texts": ["a"], "input_type": "search_query", "embedding_types": ["float"]},
        {},
    ),
    ("cohere rerank", "/v2/rerank", {"model": "tiny-rerank", "query": "q", "documents": ["a", "b"]}, {}),
    ("tei embed, X-Model", "/embed", {"inputs": "a"}, {"x-model": "tiny-dense"}),
    ("tei rerank", "/rerank", {"query": "q", "texts": ["a", "b"]}, {"x-model": "tiny-rerank"}),
    ("tei tokenize", "/tokenize", {"inputs": "a b"}, {"x-model": "tiny-dense"}),
]
ERRORS: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    ("openai, unknown model", "/v1/embeddings", {"model": "nope", "input": "a"}, {}),
    ("openai, wrong type", "/v1/embeddings", {"model": "tiny-rerank", "input": "a"}, {}),
    ("openai, too many inputs", "/v1/embeddings", {"model": "tiny-dense", "input": ["a"] * 5}, {}),
    (
        "openai, unknown prompt",
        "/v1/embeddings",
        {"model": "tiny-dense", "input": "a", "options": {"prompt_name": "x"}},
        {},
    ),
    ("cohere, unknown model", "/v2/embed", {"model": "nope", "texts": ["a"], "input_type": "search_query"}, {}),
    ("cohere, empty documents", "/v2/rerank", {"model": "tiny-rerank", "query": "q", "documents": []}, {}),
    ("tei, unknown X-Model", "/embed", {"inputs": "a"}, {"x-model": "nope"}),
    ("tei, text too long", "/embed", {"inputs": "a" * 201}, {"x-model": "tiny-dense"}),
]
UNVALIDATED: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
    ("openai, missing field", "/v1/embeddings", {"model": "tiny-dense"}, {}),
    ("cohere, wrong type", "/v2/embed", {"model": "tiny-dense", "texts": 3}, {}),
    ("tei, empty body", "/embed", None, {}),
    ("tei, not json", "/embed", None, {"content-type": "text/plain"}),
]


async def _both(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> tuple[httpx.Response, httpx.Response]:
    direct, routed = clients
    kwargs: dict[str, Any] = {"json": body} if body is not None else {"content": b"{}" if headers else b""}
    return await direct.post(path, headers=headers, **kwargs), await routed.post(path, headers=headers, **kwargs)


def _same(direct: httpx.Response, routed: httpx.Response) -> None:
    assert direct.status_code == routed.status_code, (direct.text, routed.text)
    ours, theirs = direct.json(), routed.json()
    if "id" in ours:  # Cohere's response id: new for each response
        ours["id"] = theirs["id"]
    assert ours == theirs
    assert {k: v for k, v in direct.headers.items() if k not in TIMING} == {
        k: v for k, v in routed.headers.items() if k not in TIMING
    }


# each case: what happens to it: "answered" (200), "refused" by its endpoint (a 4xx the endpoint
# raises), or "routed" (a body that does not validate: the router's way, FastAPI's 422)
CASES = [(*c, "answered") for c in VALID] + [(*c, "refused") for c in ERRORS] + [(*c, "routed") for c in UNVALIDATED]


@pytest.mark.parametrize(("case", "path", "body", "headers", "outcome"), CASES, ids=[c[0] for c in CASES])
async def test_every_answer_is_the_routers_and_only_a_body_that_does_not_validate_takes_the_router(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    routed_requests: list[str],
    case: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    outcome: str,
) -> None:
    direct, routed = await _both(clients, path, body, headers)
    if outcome == "answered":
        assert direct.status_code == 200, direct.text
    else:
        assert 400 <= direct.status_code < 500, direct.text
    _same(direct, routed)
    # the routed app's request always; the direct app's only when its body did not validate
    assert routed_requests == ([path, path] if outcome == "routed" else [path])


async def test_an_unexpected_error_is_the_outermost_layers_500(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(tasks, "embed", broken)
    with pytest.raises(RuntimeError):  # the in-process transport raises what the app raised, after its 500
        await clients[0].post("/v1/embeddings", json={"model": "tiny-dense", "input": "a"})
    transport = httpx.ASGITransport(app=clients[0]._transport.app, raise_app_exceptions=False)  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as client:
        response = await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": "a"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error" and "secret" not in response.text


async def test_the_request_metrics_name_the_route(clients: tuple[httpx.AsyncClient, httpx.AsyncClient]) -> None:
    direct = clients[0]
    assert (
        await direct.post("/v2/embed", json={"model": "tiny-dense", "texts": ["a"], "input_type": "search_query"})
    ).status_code == 200
    families = text_string_to_metric_families((await direct.get("/metrics")).text)
    routes = {s.labels["route"] for f in families if f.name == "embedserve_requests" for s in f.samples}
    assert "/v2/embed" in routes and "(unmatched)" not in routes

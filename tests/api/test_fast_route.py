"""fast_route.py: the common request skips FastAPI's general handler, and every other request gets
exactly FastAPI's answer. The rest of tests/api runs every route through it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import fastapi.routing
import httpx
import orjson
import pytest
from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from embedserve.api.errors import flat_routes
from embedserve.api.fast_route import FastBodyRoute, body_plan
from embedserve.api.responses import FastJSONResponse

pytestmark = pytest.mark.anyio


class Body(BaseModel):
    model: str
    input: str | list[str]
    dimensions: int | None = Field(default=None, ge=1)
    flags: dict[str, bool] = {}


async def echo(body: Body, request: Request) -> FastJSONResponse:
    return FastJSONResponse({"body": ascii(body.model_dump()), "set": sorted(body.model_fields_set)})


async def with_header(
    body: Body,
    request: Request,
    x_model: Annotated[str | None, Header(alias="x-model")] = None,
    x_trace_id: str | None = Header(default=None),
) -> FastJSONResponse:
    return FastJSONResponse({"header": x_model, "trace": x_trace_id, "model": body.model})


async def with_query(body: Body, request: Request, limit: int = 3) -> FastJSONResponse:
    return FastJSONResponse({"limit": limit})


async def with_required_header(body: Body, request: Request, x_key: str = Header()) -> FastJSONResponse:
    return FastJSONResponse({"key": x_key})


def _mini_app() -> FastAPI:
    """The same endpoints under a FastBodyRoute router (/fast) and FastAPI's own (/general)."""
    app = FastAPI()
    for prefix, route_class in (("/fast", FastBodyRoute), ("/general", APIRoute)):
        router = APIRouter(route_class=route_class)
        router.add_api_route("/echo", echo, methods=["POST"])
        router.add_api_route("/header", with_header, methods=["POST"])
        router.add_api_route("/query", with_query, methods=["POST"])
        router.add_api_route("/required-header", with_required_header, methods=["POST"])
        app.include_router(router, prefix=prefix)
    return app


@pytest.fixture(scope="module")
async def mini() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_mini_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
def general_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the requests FastAPI's general handler solved (it solves each one's parameters)."""
    calls: list[int] = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


JSON = {"content-type": "application/json"}
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("valid", b'{"model": "m", "input": "hello"}', JSON),
    ("valid, list and extras set", b'{"model": "m", "input": ["a", "b"], "dimensions": 8, "flags": {"x": true}}', JSON),
    ("valid, charset", b'{"model": "m", "input": "x"}', {"content-type": "application/json; charset=utf-8"}),
    ("valid, +json", b'{"model": "m", "input": "x"}', {"content-type": "application/vnd.api+json"}),
    ("unicode", '{"model": "m", "input": "héllo \\u00e9 \U0001f600"}'.encode(), JSON),
    ("invalid JSON", b'{"model": "m", "input": ', JSON),
    ("not an object", b'["m"]', JSON),
    ("missing field", b'{"input": "x"}', JSON),
    ("wrong type", b'{"model": "m", "input": 3}', JSON),
    ("below a bound", b'{"model": "m", "input": "x", "dimensions": 0}', JSON),
    ("duplicate keys", b'{"model": "a", "input": "x", "model": "b"}', JSON),
    ("big number", b'{"model": "m", "input": "x", "dimensions": 123456789012345678901234567890}', JSON),
    ("float for an int", b'{"model": "m", "input": "x", "dimensions": 8.0}', JSON),
    ("string for an int", b'{"model": "m", "input": "x", "dimensions": "8"}', JSON),
    ("trailing garbage", b'{"model": "m", "input": "x"} x', JSON),
    ("byte order mark", b'\xef\xbb\xbf{"model": "m", "input": "x"}', JSON),
    ("lone surrogate", b'{"model": "m", "input": "\\ud800"}', JSON),
    ("empty body", b"", JSON),
    ("no content type", b'{"model": "m", "input": "x"}', {}),
    ("text/plain", b'{"model": "m", "input": "x"}', {"content-type": "text/plain"}),
]


@pytest.mark.parametrize(("case", "body", "headers"), CASES, ids=[c[0] for c in CASES])
async def test_the_answer_is_fastapis_own(
    mini: httpx.AsyncClient, case: str, body: bytes, headers: dict[str, str]
) -> None:
    fast = await mini.post("/fast/echo", content=body, headers=headers)
    general = await mini.post("/general/echo", content=body, headers=headers)
    assert fast.status_code == general.status_code, (fast.text, general.text)
    assert orjson.loads(fast.content) == orjson.loads(general.content)
    assert fast.headers.get("content-type") == general.headers.get("content-type")


async def test_a_valid_json_body_skips_the_general_handler(mini: httpx.AsyncClient, general_calls: list[int]) -> None:
    response = await mini.post("/fast/echo", content=CASES[0][1], headers=JSON)
    assert response.status_code == 200 and response.json()["set"] == ["input", "model"]
    assert not general_calls
    await mini.post("/general/echo", content=CASES[0][1], headers=JSON)
    assert len(general_calls) == 1


async def test_an_invalid_body_and_another_content_type_go_to_the_general_handler(
    mini: httpx.AsyncClient, general_calls: list[int]
) -> None:
    assert (await mini.post("/fast/echo", content=b'{"input": "x"}', headers=JSON)).status_code == 422
    assert (await mini.post("/fast/echo", content=b'{"model": "m", "input": "x"}')).status_code == 422
    assert len(general_calls) == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-model": "other"}, {"x-model": ""}, {"x-model": "a", "x-trace-id": "t-1"}],
    ids=["none", "one", "empty", "both"],
)
async def test_optional_string_headers_are_read_as_fastapi_reads_them(
    mini: httpx.AsyncClient, general_calls: list[int], headers: dict[str, str]
) -> None:
    body = b'{"model": "m", "input": "x"}'
    fast = await mini.post("/fast/header", content=body, headers={**JSON, **headers})
    assert not general_calls
    general = await mini.post("/general/header", content=body, headers={**JSON, **headers})
    assert fast.status_code == general.status_code == 200
    assert fast.json() == general.json()


@pytest.mark.parametrize(("path", "params"), [("/query", {"limit": "5"}), ("/required-header", None)])
async def test_an_endpoint_with_other_parameters_always_gets_the_general_handler(
    mini: httpx.AsyncClient, general_calls: list[int], path: str, params: dict[str, str] | None
) -> None:
    body = b'{"model": "m", "input": "x"}'
    headers = {**JSON, "x-key": "k"}
    fast = await mini.post(f"/fast{path}", content=body, headers=headers, params=params)
    general = await mini.post(f"/general{path}", content=body, headers=headers, params=params)
    assert fast.json() == general.json() and fast.status_code == 200
    assert len(general_calls) == 2


def test_every_compute_route_takes_the_fast_handler(fake_app: FastAPI) -> None:
    """Each dialect's POST routes with a JSON body (TEI's with its ``X-Model`` header too); the
    rest (TEI's ``/`` takes its route from the body, model load and unload take no body) do not."""
    posts = [r for r in flat_routes(fake_app.router) if isinstance(r, APIRoute) and "POST" in r.methods]
    fast = {r.path for r in posts if isinstance(r, FastBodyRoute) and body_plan(r) is not None}
    assert fast == {
        "/v1/embeddings",
        "/api/v1/embeddings",
        "/api/v1/embed_sparse",
        "/api/v1/rerank",
        "/v1/multi-vector",
        "/api/v1/embed_multi_vector",
        "/api/v1/multi_vector/align",
        "/api/v1/embed_hybrid",
        "/v1/rerank",
        "/v2/rerank",
        "/v1/embed",
        "/v2/embed",
        "/embed",
        "/embed_sparse",
        "/rerank",
        "/similarity",
        "/tokenize",
        "/decode",
    }
    assert {r.path for r in posts} - fast == {"/", "/api/v1/models/{model_id}/load", "/api/v1/models/{model_id}/unload"}


async def test_with_opentelemetry_tracing_on_every_request_gets_fastapis_spans(general_calls: list[int]) -> None:
    """A traced app keeps FastAPI's spans for the parameters and the endpoint: its requests all
    take FastAPI's handler."""
    trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    spans = in_memory.InMemorySpanExporter()
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(spans))
    app = FastAPI(telemetry={"tracer_provider": provider})
    router = APIRouter(route_class=FastBodyRoute)
    router.add_api_route("/echo", echo, methods=["POST"])
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/echo", content=CASES[0][1], headers=JSON)
    assert response.status_code == 200 and response.json()["set"] == ["input", "model"]
    assert len(general_calls) == 1
    assert len(spans.get_finished_spans()) > 1, [s.name for s in spans.get_finished_spans()]

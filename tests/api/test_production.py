"""Production middleware in-process: API keys, body limits, /ready, /metrics, request ids and timing headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from helpers.server import ROOT
from helpers.tiny_models import fake_catalog_data
from prometheus_client.parser import text_string_to_metric_families

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
KEY = "sk-test-0123456789"
OTHER_KEY = "second-key"
GOOD = {"Authorization": f"Bearer {KEY}"}


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as c:
            await app.state.registry.wait_started()
            yield c


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Keys, limits, probes and metrics need no real numbers: the tiny catalogue on the fake engine."""
    broken = tmp_path_factory.mktemp("broken-model")
    (broken / "config.json").write_text("{}")
    data = fake_catalog_data(broken={"name": str(broken), "type": "embeddings", "engine": "fake"})
    return parse_catalog(data, ROOT)


@pytest.fixture(scope="module")
async def client(catalog: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_keys=f"{KEY},{OTHER_KEY}", max_body_bytes=4096, max_json_depth=8)
    async for c in _client(create_app(settings, catalog)):  # type: ignore[arg-type]
        yield c


@pytest.fixture(scope="module")
async def closed_probes(catalog: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(api_keys=KEY, public_probes=False)
    async for c in _client(create_app(settings, catalog)):  # type: ignore[arg-type]
        yield c


EMBED = {"model": "tiny-dense", "input": ["hello"]}
WRONG_HEADERS = [{}, {"Authorization": "Bearer nope"}, {"x-api-key": "nope"}, {"Authorization": KEY}]


@pytest.mark.parametrize(
    ("path", "body", "envelope"),
    [
        ("/v1/embeddings", EMBED, "openai"),
        ("/v2/embed", {"model": "tiny-dense", "texts": ["hello"], "input_type": "search_query"}, "cohere"),
        ("/embed", {"inputs": "hello"}, "tei"),
    ],
)
@pytest.mark.parametrize("headers", WRONG_HEADERS)
async def test_a_missing_or_wrong_key_is_a_401_in_the_dialect(
    client: httpx.AsyncClient, path: str, body: dict, envelope: str, headers: dict[str, str]
) -> None:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()
    if envelope == "openai":
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["code"] == "invalid_api_key"
        message = error["error"]["message"]
    elif envelope == "cohere":
        message = error["message"]
    else:
        assert error["error_type"] == "Unauthorized"
        message = error["error"]
    assert "nope" not in message and KEY not in message


@pytest.mark.parametrize("headers", [GOOD, {"x-api-key": KEY}, {"authorization": f"bearer {OTHER_KEY}"}])
async def test_a_right_key_in_either_header_is_let_in(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post("/v1/embeddings", json=EMBED, headers=headers)
    assert response.status_code == 200, response.text


async def test_probes_docs_and_playground_are_public_by_default(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/ready", "/metrics", "/", "/openapi.json", "/docs", "/playground"):
        response = await client.get(path)
        assert response.status_code in (200, 503), (path, response.status_code)
    assert (await client.post("/", json={"inputs": "x"})).status_code == 401  # TEI's POST / is not the front door
    assert (await client.get("/api/v1/models")).status_code == 401


async def test_probes_want_a_key_when_public_probes_is_off(closed_probes: httpx.AsyncClient) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert (await closed_probes.get(path)).status_code == 401, path
        assert (await closed_probes.get(path, headers=GOOD)).status_code == (503 if path == "/ready" else 200), path
    assert (await closed_probes.get("/openapi.json")).status_code == 200


async def test_keys_never_reach_the_log(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        await client.post("/v1/embeddings", json=EMBED, headers=GOOD)
        await client.post("/v1/embeddings", json=EMBED, headers={"x-api-key": "wrong-key-xyz"})
    assert caplog.records, "the access log should have lines"
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert KEY not in text and "wrong-key-xyz" not in text


@pytest.mark.parametrize(("path", "status"), [("/v1/embeddings", 413), ("/v2/embed", 400), ("/embed", 413)])
async def test_a_body_over_the_limit_is_refused_by_length(client: httpx.AsyncClient, path: str, status: int) -> None:
    response = await client.post(path, content=b"x" * 5000, headers={**GOOD, "content-type": "application/json"})
    assert response.status_code == status, response.text
    assert "4096 bytes" in response.text and "EMBEDSERVE_MAX_BODY_BYTES" in response.text


async def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b"[" + b"1," * 500

    response = await client.post("/v1/embeddings", content=chunks(), headers=GOOD)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
    assert sent < 10, f"the server read {sent} chunks of a body it had refused"


@pytest.mark.parametrize(("path", "status"), [("/v1/embeddings", 422), ("/v2/embed", 400), ("/embed", 422)])
async def test_deep_nesting_is_refused_naming_the_limit(client: httpx.AsyncClient, path: str, status: int) -> None:
    body = '{"input": ' + "[" * 20 + '"a"' + "]" * 20 + "}"
    response = await client.post(path, content=body, headers={**GOOD, "content-type": "application/json"})
    assert response.status_code == status, response.text
    assert "deeper than 8 levels" in response.text


async def test_brackets_inside_strings_do_not_count_as_nesting(client: httpx.AsyncClient) -> None:
    body = {"model": "tiny-dense", "input": ["[[[[[[[[[[{{{{{"]}
    response = await client.post("/v1/embeddings", json=body, headers=GOOD)
    assert response.status_code == 200, response.text


async def test_ready_is_503_and_degraded_with_a_failed_model_while_the_others_serve(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and not body["ready"]
    assert body["models"]["broken"]["state"] == "failed" and body["models"]["broken"]["error"]
    assert body["models"]["tiny-dense"]["state"] == "ready"
    assert (await client.get("/health")).json()["status"] == "degraded"
    assert (await client.post("/v1/embeddings", json=EMBED, headers=GOOD)).status_code == 200


async def test_metrics_count_requests_batches_and_model_states(client: httpx.AsyncClient) -> None:
    await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": ["a", "b", "c"]}, headers=GOOD)
    await client.get("/api/v1/models/tiny-sparse", headers=GOOD)
    await client.get("/api/v1/models/tiny-sparse")  # 401 before routing: still labelled by its route
    text = (await client.get("/metrics")).text
    template = 'method="GET",model="tiny-sparse",route="/api/v1/models/{model_id}"'
    assert f'embedserve_requests_total{{{template},status="200"}} 1.0' in text
    assert 'embedserve_requests_total{method="GET",model="",route="/api/v1/models/{model_id}",status="401"} 1.0' in text
    assert 'embedserve_requests_total{method="POST",model="tiny-dense",route="/v1/embeddings",status="200"}' in text
    assert 'embedserve_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/embeddings"}' in text
    for name in ("embedserve_batch_size_bucket", "embedserve_inputs_total", "embedserve_tokens_total"):
        assert f'{name}{{model="tiny-dense"' in text or f'{name}{{le="1.0",model="tiny-dense"}}' in text, name
    assert 'embedserve_queue_depth{model="tiny-dense"} 0.0' in text
    assert 'embedserve_model_state{model="broken",state="failed"} 1.0' in text
    assert 'embedserve_model_load_seconds{model="tiny-dense"}' in text


async def test_metrics_split_the_cpu_time_by_what_the_threads_do(client: httpx.AsyncClient) -> None:
    long_text = "word " * 200  # past the tokenizer pool's inline limit: tokenized on a pool thread
    response = await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": [long_text]}, headers=GOOD)
    assert response.status_code == 200
    text = (await client.get("/metrics")).text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "embedserve_cpu_seconds"]
    seconds = {sample.labels["threads"]: sample.value for sample in family.samples}
    assert set(seconds) == {"event_loop", "model", "tokenizer", "other"}
    assert seconds["event_loop"] > 0 and seconds["model"] > 0 and seconds["tokenizer"] > 0


async def test_request_id_is_echoed_when_sane_and_made_otherwise(client: httpx.AsyncClient) -> None:
    mine = await client.get("/health", headers={"x-request-id": "trace-42.a:b_c"})
    assert mine.headers["x-request-id"] == "trace-42.a:b_c"
    for bad in ("has space", "x" * 200, "ünï"):
        made = await client.get("/health", headers={"x-request-id": bad.encode()})
        assert made.headers["x-request-id"] != bad and len(made.headers["x-request-id"]) == 32


async def test_timing_headers_as_tei_sends_them(client: httpx.AsyncClient) -> None:
    response = await client.post("/embed", json={"inputs": ["hello", "world"]}, headers=GOOD)
    assert response.status_code == 200
    names = ("x-total-time", "x-compute-time", "x-tokenization-time", "x-queue-time", "x-inference-time")
    values = {name: int(response.headers[name]) for name in names}
    assert values["x-total-time"] >= values["x-inference-time"] >= 0
    assert int(response.headers["x-compute-tokens"]) > 0
    assert "x-inference-time" not in (await client.get("/health")).headers


@pytest.fixture(scope="module")
async def no_time(catalog: object) -> AsyncIterator[httpx.AsyncClient]:
    """A deadline that passes before any request reaches its model's queue."""
    async for c in _client(create_app(Settings(request_timeout=1e-6), catalog)):  # type: ignore[arg-type]
        yield c


@pytest.mark.parametrize(
    ("path", "body", "kind"), [("/v1/embeddings", EMBED, "openai"), ("/embed", {"inputs": "a"}, "tei")]
)
async def test_a_request_past_its_deadline_gets_503_naming_the_setting(
    no_time: httpx.AsyncClient, path: str, body: dict, kind: str
) -> None:
    response = await no_time.post(path, json=body)
    assert response.status_code == 503, response.text
    assert "EMBEDSERVE_REQUEST_TIMEOUT" in response.text
    if kind == "openai":
        assert response.json()["error"]["code"] == "request_timeout"
    else:
        assert response.json()["error_type"] == "Unhealthy"
    assert (await no_time.get("/api/v1/models/tiny-dense")).json()["stats"]["queue_depth"] == 0

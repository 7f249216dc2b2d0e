"""Model listing, lazy loading, unload and load, a failed model beside working ones, /health."""

from __future__ import annotations

import weakref

import httpx
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.anyio


async def test_listing_has_the_seed_fields_and_more(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/models")).json()
    assert body["total"] == len(body["models"]) == 8
    by_id = {m["id"]: m for m in body["models"]}
    dense = by_id["tiny-dense"]
    assert {k: dense[k] for k in ("type", "engine", "loaded", "state", "dimension", "device")} == {
        "type": "embeddings",
        "engine": "sentence-transformers",
        "loaded": True,
        "state": "ready",
        "dimension": 32,
        "device": "cpu",
    }
    assert dense["max_length"] == 128 and dense["prompts"] == ["document", "query"]
    assert {(m["backend"], m["quantize"]) for m in body["models"]} == {("torch", "none")}
    assert by_id["tiny-sparse"]["dimension"] == 30522 and by_id["tiny-sparse"]["max_length"] == 64
    assert by_id["tiny-similarity"]["engine"] == "similarity"
    assert by_id["tiny-rerank"]["engine"] == "cross-encoder"
    families = {i: by_id[i]["family"] for i in ("tiny-dense", "tiny-sparse", "tiny-rerank", "tiny-similarity")}
    assert families == {
        "tiny-dense": "dense/bert",
        "tiny-sparse": "sparse/bert",
        "tiny-rerank": "rerank/bert",
        "tiny-similarity": "dense/bert",  # it runs the dense model
    }
    assert by_id["lazy-dense"]["state"] == "not_loaded" and by_id["lazy-dense"]["loaded"] is False


async def test_failed_model_shows_its_reason_while_others_serve(client: httpx.AsyncClient) -> None:
    broken = (await client.get("/api/v1/models/broken")).json()
    assert broken["state"] == "failed" and broken["error"]
    health = (await client.get("/health")).json()
    assert health == {
        "status": "degraded",
        "total_models": 8,
        "loaded_models": 6,
        "startup_complete": True,
        "failed_models": ["broken"],
    }
    response = await client.post("/api/v1/embeddings", json={"model": "broken", "input": "x"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"
    assert (await client.post("/api/v1/embeddings", json={"model": "tiny-dense", "input": "x"})).status_code == 200
    retry = await client.post("/api/v1/models/broken/load")
    assert retry.status_code == 503 and "failed to load" in retry.json()["error"]["message"]


async def test_lazy_model_loads_on_first_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/embeddings", json={"model": "lazy-dense", "input": "hello"})
    assert response.status_code == 200
    assert (await client.get("/api/v1/models/lazy-dense")).json()["state"] == "ready"


async def test_unload_then_load(client: httpx.AsyncClient, app: FastAPI) -> None:
    engine = weakref.ref(app.state.registry.models["tiny-sparse"].engine)
    assert engine() is not None
    unloaded = await client.post("/api/v1/models/tiny-sparse/unload")
    assert engine() is None  # nothing keeps the unloaded engine (and its weights) alive
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded" and not unloaded.json()["loaded"]
    refused = await client.post("/api/v1/embed_sparse", json={"model": "tiny-sparse", "input": "x"})
    assert refused.status_code == 503
    assert "POST /api/v1/models/tiny-sparse/load" in refused.json()["error"]["message"]
    assert (await client.get("/api/v1/models/tiny-sparse/load")).status_code == 405  # a state change: POST only
    loaded = await client.post("/api/v1/models/tiny-sparse/load")
    assert loaded.status_code == 200 and loaded.json()["state"] == "ready"
    assert (await client.post("/api/v1/embed_sparse", json={"model": "tiny-sparse", "input": "x"})).status_code == 200


async def test_unknown_model_routes(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/api/v1/models/nope"),
        await client.post("/api/v1/models/nope/load"),
        await client.post("/api/v1/models/nope/unload"),
    ):
        assert response.status_code == 404
        assert "available models: broken, capped" in response.json()["error"]["message"]


async def test_openai_model_list_shape(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert {m["object"] for m in body["data"]} == {"model"}
    assert "tiny-dense" in {m["id"] for m in body["data"]}
    assert (await client.get("/v1/models/tiny-dense")).json()["id"] == "tiny-dense"


async def test_root_and_docs(client: httpx.AsyncClient) -> None:
    root = (await client.get("/")).json()
    assert root["name"] == "embedserve" and root["docs"] == "/docs"
    schema = (await client.get("/openapi.json")).json()
    for path in ("/api/v1/embeddings", "/v1/embeddings", "/api/v1/embed_sparse", "/api/v1/rerank", "/api/v1/models"):
        assert path in schema["paths"]
    assert (await client.get("/docs")).status_code == 200

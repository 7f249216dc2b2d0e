"""The fusion rerank engine in-process on tiny models: its scores are the formula over the app's own
dense and sparse vectors (each side with the dense model's prompt), and its state follows its models'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from helpers.app_client import app_client
from helpers.server import ROOT
from helpers.tiny_models import tiny_catalog_data

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
QUERY = "the heart"
DOCS = ["heart disease and blood pressure", "a recipe for apple pie", "football results", "the heart pumps blood"]
WEIGHT = 0.7  # not the default, so that the test sees the catalogue's weight used


@pytest.fixture(scope="module")
def app(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    broken = tmp_path_factory.mktemp("broken-model")  # no weights: fails to load
    (broken / "config.json").write_text("{}")
    fuse = {"dense": "tiny-dense", "sparse": "tiny-sparse", "sparse_weight": WEIGHT}
    data = tiny_catalog_data(
        tiny_models,
        **{
            "fused": {"type": "rerank", "engine": "fusion", "fuse": fuse},
            "broken": {"name": str(broken), "type": "embeddings", "device": "cpu"},
            "fused-broken": {"type": "rerank", "engine": "fusion", "fuse": {**fuse, "dense": "broken"}},
        },
    )
    return create_app(Settings(max_inputs=16), parse_catalog(data, ROOT))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as c:
        yield c


async def _post(client: httpx.AsyncClient, path: str, **body: Any) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _expected(client: httpx.AsyncClient) -> tuple[np.ndarray, int]:
    """The formula over the app's own vectors, and the tokens the four requests read."""
    query = await _post(
        client, "/api/v1/embeddings", model="tiny-dense", input=[QUERY], options={"prompt_name": "query"}
    )
    docs = await _post(
        client, "/api/v1/embeddings", model="tiny-dense", input=DOCS, options={"prompt_name": "document"}
    )
    sparse = await _post(client, "/api/v1/embed_sparse", model="tiny-sparse", input=[QUERY, *DOCS])
    q, d = np.array(query["data"][0]["embedding"]), np.array([x["embedding"] for x in docs["data"]])
    rows = np.zeros((len(DOCS) + 1, 30522))
    for row, item in zip(rows, sparse["data"], strict=True):
        row[item["indices"]] = item["values"]
    cosine = d @ q / (np.linalg.norm(d, axis=1) * np.linalg.norm(q))
    scores = cosine + WEIGHT * (rows[1:] @ rows[0]) / np.linalg.norm(rows[0])
    tokens = query["usage"]["prompt_tokens"] + docs["usage"]["prompt_tokens"] + sparse["usage"]["prompt_tokens"]
    return scores, tokens


async def test_scores_are_the_formula_over_the_served_vectors(client: httpx.AsyncClient) -> None:
    body = await _post(client, "/api/v1/rerank", model="fused", query=QUERY, documents=DOCS)
    expected, tokens = await _expected(client)
    assert [r["index"] for r in body["results"]] == list(np.argsort(-expected, kind="stable"))
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], np.sort(expected)[::-1], atol=1e-5)
    assert body["usage"]["prompt_tokens"] == tokens


async def test_top_n_and_one_document_alone(client: httpx.AsyncClient) -> None:
    expected, _ = await _expected(client)
    top = await _post(client, "/api/v1/rerank", model="fused", query=QUERY, documents=DOCS, top_n=2)
    assert [r["index"] for r in top["results"]] == list(np.argsort(-expected, kind="stable")[:2])
    alone = await _post(client, "/api/v1/rerank", model="fused", query=QUERY, documents=DOCS[3:])
    assert alone["results"][0]["relevance_score"] == pytest.approx(expected[3], abs=1e-5)  # not relative to the list


async def test_listing_names_the_fused_models(client: httpx.AsyncClient) -> None:
    info = (await client.get("/api/v1/models/fused")).json()
    assert (info["engine"], info["source"], info["name"], info["state"]) == (
        "fusion",
        "catalog",
        "tiny-dense + tiny-sparse",
        "ready",
    )
    assert info["fuse"] == {"dense": "tiny-dense", "sparse": "tiny-sparse", "sparse_weight": WEIGHT}


async def test_a_failed_model_fails_the_fusion_with_its_reason(client: httpx.AsyncClient) -> None:
    info = (await client.get("/api/v1/models/fused-broken")).json()
    assert info["state"] == "failed" and "model 'broken' failed to load" in info["error"]
    response = await client.post("/api/v1/rerank", json={"model": "fused-broken", "query": QUERY, "documents": DOCS})
    assert response.status_code == 503 and "broken" in response.json()["error"]["message"]


async def test_unload_refuses_its_requests_and_leaves_its_models_serving(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/models/fused/unload")).json()["state"] == "unloaded"
    response = await client.post("/api/v1/rerank", json={"model": "fused", "query": QUERY, "documents": DOCS})
    assert response.status_code == 503 and "unloaded" in response.json()["error"]["message"]
    assert (await client.get("/api/v1/models/tiny-dense")).json()["state"] == "ready"
    await _post(client, "/api/v1/embeddings", model="tiny-dense", input=DOCS)
    assert (await client.post("/api/v1/models/fused/load")).json()["state"] == "ready"
    await _post(client, "/api/v1/rerank", model="fused", query=QUERY, documents=DOCS)

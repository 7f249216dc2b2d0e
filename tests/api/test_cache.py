"""The in-process embedding cache through the app, on tiny models: a hit is bit-for-bit the vector
first computed, with the same usage; per-request options still apply to it; the header and the
metrics count it in every dialect; the rerankers that embed (``similarity``, ``fusion``) take
their vectors from it."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from itertools import count
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
_fresh = count()


def fresh(label: str = "text") -> str:
    """A text no other test sent (each test starts from misses)."""
    return f"{label} number {next(_fresh)} about the heart"


@pytest.fixture(scope="module")
def app(tiny_models: dict[str, Path]) -> FastAPI:
    fuse = {"dense": "tiny-dense", "sparse": "tiny-sparse"}
    data = tiny_catalog_data(tiny_models, fused={"type": "rerank", "engine": "fusion", "fuse": fuse})
    return create_app(Settings(max_inputs=16, cache_bytes=8 * 1024 * 1024), parse_catalog(data, ROOT))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as c:
        yield c


async def post(client: httpx.AsyncClient, path: str, **body: Any) -> httpx.Response:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response


def hits(response: httpx.Response) -> tuple[int, int]:
    return int(response.headers["x-cache-hits"]), int(response.headers["x-cache-lookups"])


def raw(response: httpx.Response) -> bytes:
    return base64.b64decode(response.json()["data"][0]["embedding"])


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_a_hit_is_bit_for_bit_the_computed_vector_with_the_same_usage(client: httpx.AsyncClient) -> None:
    text = fresh()
    body = {
        "model": "tiny-dense",
        "input": [text],
        "encoding_format": "base64",
        "options": {"normalize_embeddings": False},
    }
    first = await post(client, "/api/v1/embeddings", **body)
    again = await post(client, "/api/v1/embeddings", **body)
    assert hits(first) == (0, 1) and hits(again) == (1, 1)
    assert raw(again) == raw(first)
    assert again.json()["usage"] == first.json()["usage"] and first.json()["usage"]["prompt_tokens"] > 0
    assert "x-compute-tokens" in first.headers and "x-compute-tokens" not in again.headers  # nothing computed


async def test_options_after_the_model_apply_to_a_hit(client: httpx.AsyncClient) -> None:
    text = fresh()
    full = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text], normalized=False)
    vector = np.array(full.json()["data"][0]["embedding"], dtype=np.float32)
    cut = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text], dimensions=8)
    assert hits(cut) == (1, 1)
    expected = vector[:8] / np.linalg.norm(vector[:8])
    np.testing.assert_allclose(cut.json()["data"][0]["embedding"], expected, rtol=1e-6, atol=1e-7)
    binary = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text], embedding_type="ubinary")
    assert hits(binary) == (1, 1)
    assert binary.json()["data"][0]["embedding"] == np.packbits(vector > 0).tolist()


async def test_a_prompt_is_part_of_the_key(client: httpx.AsyncClient) -> None:
    text = fresh()
    await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text])
    query = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text], options={"prompt_name": "query"})
    assert hits(query) == (0, 1)
    prompt = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text], options={"prompt": "q: "})
    assert hits(prompt) == (0, 1)
    await post(client, "/v2/embed", model="tiny-dense", texts=[text])
    capped = await post(client, "/v2/embed", model="tiny-dense", texts=[text], max_tokens=4)
    assert hits(capped) == (0, 1)
    left = await post(client, "/v2/embed", model="tiny-dense", texts=[text], truncate="START")
    assert hits(left) == (0, 1)


async def test_an_over_long_hit_is_refused_when_truncation_is_off(client: httpx.AsyncClient) -> None:
    text = fresh("long " * 200)  # past tiny-dense's 128 tokens
    await post(client, "/api/v1/embeddings", model="tiny-dense", input=[text])
    response = await client.post(
        "/api/v1/embeddings", json={"model": "tiny-dense", "input": ["short", text], "truncate": False}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["param"] == "input[1]"
    assert "tokens" in response.json()["error"]["message"]


async def test_a_text_repeated_in_a_request_is_computed_once(client: httpx.AsyncClient) -> None:
    a, b = fresh(), fresh()
    before = await metric(client, "embedserve_inputs_total", model="tiny-dense")
    response = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[a, b, a, a])
    assert await metric(client, "embedserve_inputs_total", model="tiny-dense") == before + 2
    rows = [row["embedding"] for row in response.json()["data"]]
    assert rows[0] == rows[2] == rows[3] != rows[1]
    one_a = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[a])
    one_b = await post(client, "/api/v1/embeddings", model="tiny-dense", input=[b])
    tokens = [r.json()["usage"]["prompt_tokens"] for r in (response, one_a, one_b)]
    assert tokens[0] == 3 * tokens[1] + tokens[2]  # usage counts every input, computed or not


async def test_chunked_inputs_are_kept_pooled_under_their_windowing(client: httpx.AsyncClient) -> None:
    long = fresh("a very long text " * 80)  # several windows of tiny-dense's 128 tokens
    body: dict[str, Any] = {"model": "tiny-dense", "input": [long, "short"], "long_inputs": "chunk"}
    first = await post(client, "/v1/embeddings", **body, encoding_format="base64")
    again = await post(client, "/v1/embeddings", **body, encoding_format="base64")
    assert hits(first) == (0, 2) and hits(again) == (2, 2)
    assert again.json()["data"] == first.json()["data"] and again.json()["usage"] == first.json()["usage"]
    assert first.json()["usage"]["prompt_tokens"] > 128  # every window counted, on a hit too
    # the same text cut (not windowed) is another entry
    cut = await post(client, "/v1/embeddings", model="tiny-dense", input=[long])
    assert hits(cut) == (0, 1)
    # each window's vector is not kept: a request for them computes them
    windows = await post(client, "/v1/embeddings", **body, options={"return_chunks": True})
    assert "x-cache-hits" not in windows.headers


async def test_sparse_hits_are_bit_for_bit_and_top_k_applies_after(client: httpx.AsyncClient) -> None:
    text = fresh()
    first = await post(client, "/api/v1/embed_sparse", model="tiny-sparse", input=[text])
    again = await post(client, "/api/v1/embed_sparse", model="tiny-sparse", input=[text])
    assert hits(first) == (0, 1) and hits(again) == (1, 1)
    assert again.json()["data"] == first.json()["data"] and again.json()["usage"] == first.json()["usage"]
    top = await post(client, "/api/v1/embed_sparse", model="tiny-sparse", input=[text], options={"top_k": 3})
    assert hits(top) == (1, 1)
    item, full = top.json()["data"][0], first.json()["data"][0]
    weights = dict(zip(full["indices"], full["values"], strict=True))
    assert sorted(item["values"], reverse=True) == sorted(weights.values(), reverse=True)[:3]
    assert all(weights[i] == v for i, v in zip(item["indices"], item["values"], strict=True))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"model": "tiny-dense", "input": "TEXT"}),
        ("/api/v1/embeddings", {"model": "tiny-dense", "input": ["TEXT"]}),
        ("/v1/embed", {"model": "tiny-dense", "texts": ["TEXT"]}),
        ("/v2/embed", {"model": "tiny-dense", "texts": ["TEXT"], "embedding_types": ["float", "int8"]}),
        ("/embed", {"model": "tiny-dense", "inputs": "TEXT"}),
        ("/embed_sparse", {"model": "tiny-sparse", "inputs": "TEXT"}),
        ("/api/v1/embed_sparse", {"model": "tiny-sparse", "input": ["TEXT"]}),
    ],
)
async def test_every_dialect_says_how_many_inputs_came_from_the_cache(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    text = fresh()
    filled = {k: (text if v == "TEXT" else [text] if v == ["TEXT"] else v) for k, v in body.items()}
    first = await post(client, path, **filled)
    again = await post(client, path, **filled)
    assert hits(first) == (0, 1) and hits(again) == (1, 1)
    # the same body, bit for bit (floats as JSON), but Cohere's per-response id
    without_id = [r.json() for r in (first, again)]
    for body_ in without_id:
        if isinstance(body_, dict):
            body_.pop("id", None)
    assert without_id[0] == without_id[1]


async def test_metrics_count_hits_misses_and_bytes(client: httpx.AsyncClient) -> None:
    labels = {"model": "tiny-dense", "backend": "memory"}
    hits_before = await metric(client, "embedserve_cache_hits_total", **labels)
    misses_before = await metric(client, "embedserve_cache_misses_total", **labels)
    bytes_before = await metric(client, "embedserve_cache_bytes", **labels)
    texts = [fresh(), fresh(), fresh()]
    await post(client, "/api/v1/embeddings", model="tiny-dense", input=texts)
    await post(client, "/api/v1/embeddings", model="tiny-dense", input=texts[:2])
    assert await metric(client, "embedserve_cache_misses_total", **labels) == misses_before + 3
    assert await metric(client, "embedserve_cache_hits_total", **labels) == hits_before + 2
    assert await metric(client, "embedserve_cache_bytes", **labels) > bytes_before + 3 * 32 * 4
    assert await metric(client, "embedserve_cache_capacity_bytes", backend="memory") == 8 * 1024 * 1024


async def test_the_similarity_reranker_takes_document_vectors_from_the_cache(client: httpx.AsyncClient) -> None:
    query, docs = fresh("query"), [fresh("doc") for _ in range(3)]
    first = await post(client, "/api/v1/rerank", model="tiny-similarity", query=query, documents=docs)
    again = await post(client, "/api/v1/rerank", model="tiny-similarity", query=fresh("query"), documents=docs)
    assert hits(first) == (0, 4) and hits(again) == (3, 4)  # the query is new, the documents are not
    same = await post(client, "/api/v1/rerank", model="tiny-similarity", query=query, documents=docs)
    assert hits(same) == (4, 4) and same.json()["results"] == first.json()["results"]
    assert same.json()["usage"] == first.json()["usage"]


async def test_the_fusion_reranker_takes_its_vectors_from_its_models_caches(client: httpx.AsyncClient) -> None:
    query, docs = fresh("query"), [fresh("doc") for _ in range(3)]
    # the documents embedded by the dense model's route, as the fusion reranker embeds them
    await post(client, "/api/v1/embeddings", model="tiny-dense", input=docs, options={"prompt_name": "document"})
    first = await post(client, "/api/v1/rerank", model="fused", query=query, documents=docs)
    assert hits(first) == (3, 8)  # 4 dense lookups (3 found) and 4 sparse
    again = await post(client, "/api/v1/rerank", model="fused", query=query, documents=docs)
    assert hits(again) == (8, 8)
    assert again.json()["results"] == first.json()["results"]


async def test_without_a_cache_nothing_is_looked_up(tiny_models: dict[str, Path]) -> None:
    app = create_app(Settings(cache_bytes=0), parse_catalog(tiny_catalog_data(tiny_models), ROOT))
    async with app_client(app) as c:
        for _ in range(2):
            response = await post(c, "/api/v1/embeddings", model="tiny-dense", input=["same text"])
            assert "x-cache-hits" not in response.headers
        assert "embedserve_cache_hits_total" not in (await c.get("/metrics")).text


async def test_a_model_of_several_types_keeps_each_types_outputs_apart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """BGE-M3 (one model, one queue) serves dense and sparse vectors: each is cached under its own
    key, and a hit is bit-for-bit the output first computed."""
    from helpers.tiny_multi_vector import build_tiny_m3

    m3 = build_tiny_m3(tmp_path_factory.mktemp("tiny-m3") / "m3")
    models = {"m3": {"name": str(m3), "type": "embeddings", "engine": "bge-m3", "device": "cpu"}}
    app = create_app(Settings(), parse_catalog({"models": models}, ROOT))
    async with app_client(app) as c:
        dense_body = {"model": "m3", "input": ["the heart"], "encoding_format": "base64"}
        dense = [await post(c, "/v1/embeddings", **dense_body) for _ in range(2)]
        sparse = [await post(c, "/api/v1/embed_sparse", model="m3", input=["the heart"]) for _ in range(2)]
    assert [hits(r) for r in dense] == [(0, 1), (1, 1)] and raw(dense[1]) == raw(dense[0])
    assert [hits(r) for r in sparse] == [(0, 1), (1, 1)] and sparse[1].json()["data"] == sparse[0].json()["data"]

"""Sparse embeddings and rerank against tiny models in-process, compared with the libraries."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from sentence_transformers import CrossEncoder, SparseEncoder

pytestmark = pytest.mark.anyio
DOCS = ["heart disease and blood pressure", "a recipe for apple pie", "football results", "the heart pumps blood"]


@pytest.fixture(scope="module")
def sparse_library(tiny_models: dict[str, Path]) -> SparseEncoder:
    return SparseEncoder(str(tiny_models["sparse"]), device="cpu")


@pytest.fixture(scope="module")
def cross_encoder(tiny_models: dict[str, Path]) -> CrossEncoder:
    return CrossEncoder(str(tiny_models["rerank"]), device="cpu")


def _dense(item: dict, size: int = 30522) -> np.ndarray:
    out = np.zeros(size, dtype=np.float32)
    out[item["indices"]] = item["values"]
    return out


async def test_sparse_equals_the_library(client: httpx.AsyncClient, sparse_library: SparseEncoder) -> None:
    response = await client.post("/api/v1/embed_sparse", json={"model": "tiny-sparse", "input": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny-sparse" and body["usage"]["total_tokens"] > 0
    expected = sparse_library.encode(DOCS).to_dense().numpy()
    for i, item in enumerate(body["data"]):
        assert item["object"] == "sparse_embedding" and item["index"] == i
        indices = np.array(item["indices"])
        assert np.all(np.diff(indices) > 0)
        assert np.all(np.asarray(item["values"]) > 0)
        np.testing.assert_allclose(_dense(item), expected[i], atol=1e-5)
        assert "tokens" not in item


async def test_sparse_top_k_keeps_the_largest_and_tokens_match(client: httpx.AsyncClient) -> None:
    full = (await client.post("/api/v1/embed_sparse", json={"input": DOCS[0]})).json()["data"][0]
    top = (
        await client.post(
            "/api/v1/embed_sparse", json={"input": DOCS[0], "options": {"top_k": 3, "return_tokens": True}}
        )
    ).json()["data"][0]
    assert len(top["indices"]) == 3 and top["indices"] == sorted(top["indices"])
    assert sorted(top["values"], reverse=True) == sorted(full["values"], reverse=True)[:3]
    assert len(top["tokens"]) == 3 and all(isinstance(t, str) and t for t in top["tokens"])


async def test_sparse_batch_equals_one_by_one(client: httpx.AsyncClient) -> None:
    batch = (await client.post("/api/v1/embed_sparse", json={"input": DOCS})).json()["data"]
    for text, item in zip(DOCS, batch, strict=True):
        single = (await client.post("/api/v1/embed_sparse", json={"input": [text]})).json()["data"][0]
        np.testing.assert_allclose(_dense(single), _dense(item), atol=1e-5)


async def test_rerank_order_is_the_cross_encoders(client: httpx.AsyncClient, cross_encoder: CrossEncoder) -> None:
    query = "what does the heart do"
    response = await client.post("/api/v1/rerank", json={"model": "tiny-rerank", "query": query, "documents": DOCS})
    assert response.status_code == 200, response.text
    body = response.json()
    scores = cross_encoder.predict([(query, d) for d in DOCS])
    assert [r["index"] for r in body["results"]] == list(np.argsort(-scores, kind="stable"))
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(float(scores[r["index"]]), abs=1e-6)
        assert r["document"] == {"text": DOCS[r["index"]]}
    assert body["object"] == "list" and body["model"] == "tiny-rerank"
    pair_tokens = cross_encoder.tokenizer([query] * len(DOCS), DOCS)["input_ids"]
    assert body["usage"]["total_tokens"] == sum(len(ids) for ids in pair_tokens)


@pytest.mark.parametrize("field", ["top_k", "top_n"])
async def test_rerank_top_and_return_documents(client: httpx.AsyncClient, field: str) -> None:
    body = {"model": "tiny-rerank", "query": "q", "documents": DOCS, field: 2, "return_documents": False}
    results = (await client.post("/api/v1/rerank", json=body)).json()["results"]
    assert len(results) == 2 and all("document" not in r for r in results)
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]


async def test_similarity_reranker_scores_cosine(client: httpx.AsyncClient) -> None:
    body = {"model": "tiny-similarity", "query": "the heart", "documents": DOCS}
    results = (await client.post("/api/v1/rerank", json=body)).json()["results"]
    embedded = (
        await client.post("/api/v1/embeddings", json={"model": "tiny-dense", "input": ["the heart", *DOCS]})
    ).json()
    vectors = np.array([d["embedding"] for d in embedded["data"]])
    cosine = vectors[1:] @ vectors[0]
    assert [r["index"] for r in results] == list(np.argsort(-cosine, kind="stable"))
    np.testing.assert_allclose([r["relevance_score"] for r in results], np.sort(cosine)[::-1], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"query": "q", "documents": ["a", ""]}, 422, "documents[1]", "empty string"),
        ({"query": "q", "documents": []}, 422, "documents", "empty list"),
        ({"query": "", "documents": ["a"]}, 422, "query", "empty string"),
        ({"query": "q", "documents": ["a", 5]}, 422, "documents[1]", "must be a string, got integer"),
        ({"query": "q", "documents": ["a"], "top_k": 0}, 422, "top_k", "greater than or equal to 1"),
        ({"query": "q", "documents": ["a"], "top_k": 1, "top_n": 2}, 422, "top_n", "same setting"),
        ({"query": "q", "documents": ["a"] * 17}, 413, "documents", "limit is 16"),
        ({"query": "q", "documents": ["a"], "model": "tiny-dense"}, 400, "model", "needs a model of type rerank"),
    ],
)
async def test_rerank_errors(client: httpx.AsyncClient, body: dict, status: int, param: str, fragment: str) -> None:
    response = await client.post("/api/v1/rerank", json={"model": "tiny-rerank", **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]

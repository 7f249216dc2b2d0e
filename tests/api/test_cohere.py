"""Cohere's rerank and embed (v1, v2) against tiny models in-process, compared with the native routes."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.anyio
QUERY = "heart disease"
DOCS = ["heart disease and blood pressure", "a recipe for apple pie", "football results", "the heart pumps blood"]
TEXTS = ["the cat sat on the mat", "a stock market crash", "hello"]
FILLER = " ".join(["the committee reviewed the budget and the hiring plan"] * 30)  # > 128 tokens


async def _ok(client: httpx.AsyncClient, path: str, **body: Any) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _native_scores(client: httpx.AsyncClient, documents: list[str], model: str = "tiny-rerank") -> np.ndarray:
    body = await _ok(client, "/api/v1/rerank", model=model, query=QUERY, documents=documents)
    scores = np.zeros(len(documents))
    for r in body["results"]:
        scores[r["index"]] = r["relevance_score"]
    return scores


async def _native_vectors(client: httpx.AsyncClient, texts: list[str], **body: Any) -> np.ndarray:
    data = (await _ok(client, "/api/v1/embeddings", model="tiny-dense", input=texts, **body))["data"]
    return np.array([d["embedding"] for d in data])


async def test_rerank_v1_equals_native_and_has_cohere_and_jina_fields(client: httpx.AsyncClient) -> None:
    body = await _ok(client, "/v1/rerank", model="tiny-rerank", query=QUERY, documents=DOCS, top_n=3)
    assert set(body) == {"id", "results", "meta", "model", "usage"}
    assert body["meta"] == {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}
    assert body["model"] == "tiny-rerank" and body["usage"]["total_tokens"] > 0
    assert len(body["results"]) == 3 and all(set(r) == {"index", "relevance_score"} for r in body["results"])
    native = await _native_scores(client, DOCS)
    assert [r["index"] for r in body["results"]] == list(np.argsort(-native)[:3])
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(native[r["index"]], abs=1e-6)


async def test_rerank_v1_documents_as_objects_with_rank_fields(client: httpx.AsyncClient) -> None:
    documents = [{"text": d, "id": str(i)} for i, d in enumerate(DOCS)]
    body = await _ok(client, "/v1/rerank", query=QUERY, documents=documents, return_documents=True)
    assert body["model"] == "tiny-rerank"  # the default rerank model: the first of its type
    assert {r["index"]: r["document"] for r in body["results"]} == dict(enumerate(documents))
    titled = [{"title": "t", "text": d} for d in DOCS]
    body = await _ok(client, "/v1/rerank", query=QUERY, documents=titled, rank_fields=["title", "text"])
    native = await _native_scores(client, [f"title: t\ntext: {d}" for d in DOCS])
    for r in body["results"]:
        assert r["relevance_score"] == pytest.approx(native[r["index"]], abs=1e-6)
    strings = await _ok(client, "/v1/rerank", query=QUERY, documents=DOCS[:2], return_documents=True)
    assert {r["document"]["text"] for r in strings["results"]} == set(DOCS[:2])


async def test_rerank_v2_shape_and_max_tokens_per_doc(client: httpx.AsyncClient) -> None:
    body = await _ok(client, "/v2/rerank", model="tiny-similarity", query=QUERY, documents=DOCS)
    assert set(body) == {"id", "results", "meta"}
    assert body["meta"]["api_version"] == {"version": "2"}
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    native = await _native_scores(client, DOCS, "tiny-similarity")
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(sorted(native, reverse=True), abs=1e-6)
    same_start = ["alpha beta gamma delta", "alpha beta omega sigma"]
    full = await _ok(client, "/v2/rerank", model="tiny-similarity", query=QUERY, documents=same_start)
    assert full["results"][0]["relevance_score"] != pytest.approx(full["results"][1]["relevance_score"])
    # 4 tokens: [CLS] alpha beta [SEP]; the documents differ only after them
    cut = await _ok(
        client, "/v2/rerank", model="tiny-similarity", query=QUERY, documents=same_start, max_tokens_per_doc=4
    )
    assert cut["results"][0]["relevance_score"] == pytest.approx(cut["results"][1]["relevance_score"], abs=1e-6)


async def test_embed_v1_floats_and_by_type(client: httpx.AsyncClient) -> None:
    native = await _native_vectors(client, TEXTS)
    body = await _ok(client, "/v1/embed", model="tiny-dense", texts=TEXTS)
    assert body["response_type"] == "embeddings_floats" and body["texts"] == TEXTS
    assert body["meta"]["api_version"] == {"version": "1"} and body["meta"]["billed_units"]["input_tokens"] > 0
    np.testing.assert_allclose(body["embeddings"], native, atol=1e-6)
    body = await _ok(client, "/v1/embed", model="tiny-dense", texts=TEXTS, embedding_types=["int8", "float"])
    assert body["response_type"] == "embeddings_by_type" and set(body["embeddings"]) == {"int8", "float"}
    np.testing.assert_allclose(body["embeddings"]["float"], native, atol=1e-6)
    int8 = await _native_vectors(client, TEXTS, options={"precision": "int8"})
    np.testing.assert_array_equal(body["embeddings"]["int8"], int8)


async def test_embed_v2_types_dimension_and_input_type(client: httpx.AsyncClient) -> None:
    types = ["float", "uint8", "binary", "ubinary", "base64"]
    body = await _ok(client, "/v2/embed", model="tiny-dense", texts=TEXTS, embedding_types=types, output_dimension=16)
    assert body["response_type"] == "embeddings_by_type" and body["meta"]["api_version"] == {"version": "2"}
    embeddings = body["embeddings"]
    assert list(embeddings) == types
    native = await _native_vectors(client, TEXTS, dimensions=16)
    np.testing.assert_allclose(embeddings["float"], native, atol=1e-6)
    decoded = [np.frombuffer(base64.b64decode(b), dtype="<f4") for b in embeddings["base64"]]
    np.testing.assert_allclose(decoded, native, atol=1e-6)
    for precision in ("uint8", "binary", "ubinary"):
        expected = await _native_vectors(client, TEXTS, dimensions=16, options={"precision": precision})
        np.testing.assert_array_equal(embeddings[precision], expected)
    default = await _ok(client, "/v2/embed", model="tiny-dense", texts=TEXTS, input_type="search_query")
    assert list(default["embeddings"]) == ["float"]
    query = await _native_vectors(client, TEXTS, options={"prompt_name": "query"})
    np.testing.assert_allclose(default["embeddings"]["float"], query, atol=1e-6)


async def test_embed_truncate_start_end_none_and_max_tokens(client: httpx.AsyncClient) -> None:
    texts = ["first opening words. " + FILLER, "other beginning here. " + FILLER]

    async def embed(**body: Any) -> np.ndarray:
        got = await _ok(client, "/v2/embed", model="tiny-dense", texts=texts, **body)
        return np.array(got["embeddings"]["float"])

    start = await embed(truncate="START")  # the beginnings are cut: both read the same tail
    np.testing.assert_allclose(start[0], start[1], atol=1e-6)
    end = await embed(truncate="END")
    np.testing.assert_allclose(end, await _native_vectors(client, texts), atol=1e-6)
    assert not np.allclose(end[0], end[1])
    capped = await embed(max_tokens=6)
    np.testing.assert_allclose(
        capped, await _native_vectors(client, ["first opening words.", "other beginning here."]), atol=1e-6
    )
    response = await client.post("/v2/embed", json={"model": "tiny-dense", "texts": texts, "truncate": "NONE"})
    assert response.status_code == 400
    assert "texts[0] has" in response.json()["message"] and "tokens" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v2/embed", {"texts": []}, 400, "'texts' is an empty list"),
        ("/v2/embed", {"texts": ["a", ""]}, 400, "texts[1] is an empty string"),
        ("/v2/embed", {"texts": ["a"], "embedding_types": ["float16"]}, 400, "embedding_types[0]"),
        ("/v2/embed", {"texts": ["a"], "input_type": "image"}, 400, "input_type image is not supported"),
        ("/v1/embed", {"texts": ["a"] * 17}, 400, "17 items; the limit is 16"),
        ("/v1/embed", {"texts": ["a"], "model": "nope"}, 404, "model 'nope' does not exist"),
        ("/v1/embed", {"texts": ["a"], "model": "broken"}, 503, "failed to load"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "model": "tiny-dense"}, 400, "needs a model of type rerank"),
        ("/v2/rerank", {"documents": ["a"]}, 400, "'query' is required"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "a"}]}, 400, "documents[0] has no field 'text'"),
        ("/v1/rerank", {"query": "q", "documents": [{"text": 3}]}, 400, "documents[0].text must be a string"),
    ],
)
async def test_errors_are_cohere_messages(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"message"} and fragment in response.json()["message"], response.json()

"""The TEI routes against tiny models in-process, compared with the native routes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from asgi_lifespan import LifespanManager
from helpers.server import ROOT

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
TEXTS = ["the cat sat on the mat", "a stock market crash", "hello"]
QUERY = "heart disease"
DOCS = ["heart disease and blood pressure", "a recipe for apple pie", "the heart pumps blood"]
FILLER = " ".join(["the committee reviewed the budget and the hiring plan"] * 30)  # > 128 tokens


async def _ok(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def _native(client: httpx.AsyncClient, texts: list[str], model: str = "tiny-dense", **body: Any) -> np.ndarray:
    data = (await _ok(client, "/api/v1/embeddings", model=model, input=texts, **body))["data"]
    return np.array([d["embedding"] for d in data])


async def test_embed_equals_native(client: httpx.AsyncClient) -> None:
    native = await _native(client, TEXTS)
    np.testing.assert_allclose(await _ok(client, "/embed", inputs=TEXTS), native, atol=1e-6)
    one = await _ok(client, "/embed", inputs=TEXTS[0])
    assert len(one) == 1 and len(one[0]) == 32  # always a list of rows
    raw = await _ok(client, "/embed", inputs=TEXTS, normalize=False, prompt_name="query", dimensions=8)
    expected = await _native(
        client, TEXTS, dimensions=8, options={"normalize_embeddings": False, "prompt_name": "query"}
    )
    np.testing.assert_allclose(raw, expected, atol=1e-6)
    encoded = await _ok(client, "/embed", inputs=TEXTS, encoding_format="base64")
    np.testing.assert_allclose([np.frombuffer(base64.b64decode(b), "<f4") for b in encoded], native, atol=1e-6)
    ids = [[1996, 4937, 2938, 2006, 1996, 13523]]  # "the cat sat on the mat" without [CLS], [SEP]
    np.testing.assert_allclose(await _ok(client, "/embed", inputs=ids), native[:1], atol=1e-6)


async def test_model_by_field_or_header(client: httpx.AsyncClient) -> None:
    capped = await _native(client, TEXTS[:2], model="capped")  # its own prompt and max_length
    np.testing.assert_allclose(await _ok(client, "/embed", inputs=TEXTS[:2], model="capped"), capped, atol=1e-6)
    assert not np.allclose(capped, await _native(client, TEXTS[:2]))
    by_header = await _ok(client, "/embed", headers={"X-Model": "capped"}, inputs=TEXTS[:2])
    np.testing.assert_allclose(by_header, capped, atol=1e-6)
    response = await client.post("/embed", json={"inputs": "x", "model": "capped"}, headers={"x-model": "tiny-dense"})
    assert response.status_code == 413 and "disagree" in response.json()["error"]


async def test_truncation_direction(client: httpx.AsyncClient) -> None:
    texts = ["first opening words. " + FILLER, "other beginning here. " + FILLER]
    left = await _ok(client, "/embed", inputs=texts, truncation_direction="Left")
    np.testing.assert_allclose(left[0], left[1], atol=1e-6)  # the beginnings were cut
    right = await _ok(client, "/embed", inputs=texts, truncation_direction="right", truncate=True)
    np.testing.assert_allclose(right, await _native(client, texts), atol=1e-6)
    response = await client.post("/embed", json={"inputs": texts, "truncate": False})
    assert response.status_code == 413
    assert response.json()["error_type"] == "Validation" and "inputs[0] has" in response.json()["error"]


async def test_embed_sparse_equals_native(client: httpx.AsyncClient) -> None:
    body = await _ok(client, "/embed_sparse", inputs=TEXTS)
    native = (await _ok(client, "/api/v1/embed_sparse", model="tiny-sparse", input=TEXTS))["data"]
    for row, item in zip(body, native, strict=True):
        assert [e["index"] for e in row] == item["indices"]
        np.testing.assert_allclose([e["value"] for e in row], item["values"], rtol=1e-6)


async def test_rerank_raw_scores_and_text(client: httpx.AsyncClient) -> None:
    body = await _ok(client, "/rerank", query=QUERY, texts=DOCS, return_text=True)
    native = (await _ok(client, "/api/v1/rerank", model="tiny-rerank", query=QUERY, documents=DOCS))["results"]
    assert [r["index"] for r in body] == [r["index"] for r in native]
    assert [r["score"] for r in body] == pytest.approx([r["relevance_score"] for r in native], abs=1e-6)
    assert [r["text"] for r in body] == [DOCS[r["index"]] for r in body]
    raw = await _ok(client, "/rerank", query=QUERY, texts=DOCS, raw_scores=True)
    assert "text" not in raw[0]
    by_index = {r["index"]: r["score"] for r in body}
    for r in raw:
        assert 1 / (1 + np.exp(-r["score"])) == pytest.approx(by_index[r["index"]], abs=1e-6)


async def test_similarity_is_the_cosine_of_native_embeddings(client: httpx.AsyncClient) -> None:
    scores = await _ok(client, "/similarity", inputs={"source_sentence": TEXTS[0], "sentences": TEXTS[1:]})
    vectors = await _native(client, TEXTS)
    assert scores == pytest.approx(list(vectors[1:] @ vectors[0]), abs=1e-6)


async def test_tokenize_and_decode(client: httpx.AsyncClient) -> None:
    [tokens] = await _ok(client, "/tokenize", inputs="héllo cat")
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[1] == {"id": 7592, "text": "héllo", "special": False, "start": 0, "stop": 6}  # UTF-8 bytes
    assert tokens[2] == {"id": 4937, "text": "cat", "special": False, "start": 7, "stop": 10}
    assert tokens[-1]["text"] == "[SEP]"
    plain = await _ok(client, "/tokenize", inputs=["cat", "hi"], add_special_tokens=False)
    assert [[t["text"] for t in row] for row in plain] == [["cat"], ["hi"]]
    prompted = await _ok(client, "/tokenize", inputs="cat", prompt_name="query", add_special_tokens=False)
    assert [t["text"] for t in prompted[0]] == ["query", ":", "cat"]
    assert await _ok(client, "/decode", ids=[101, 7592, 4937, 102]) == ["hello cat"]
    batch = await _ok(client, "/decode", ids=[[7592], [101, 4937]], skip_special_tokens=False)
    assert batch == ["hello", "[CLS] cat"]


async def test_info_describes_the_default_or_named_model(client: httpx.AsyncClient) -> None:
    info = (await client.get("/info")).json()
    assert info["model_id"] == "tiny-dense" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 128 and info["max_client_batch_size"] == 16 and info["auto_truncate"] is True
    reranker = (await client.get("/info", headers={"x-model": "tiny-rerank"})).json()
    assert "reranker" in reranker["model_type"]
    sparse = (await client.get("/info?model=tiny-sparse")).json()
    assert sparse["model_type"] == {"embedding": {"pooling": "splade"}}


async def test_info_reports_the_settings_and_the_models_real_dtype(tiny_models: dict[str, Path]) -> None:
    """What /info says comes from the settings and the catalogue (lazy: nothing is loaded)."""
    dense = str(tiny_models["dense"])
    models = {
        "int8": {"name": dense, "type": "embeddings", "backend": "onnx", "quantize": "int8"},
        "bf16": {"name": dense, "type": "embeddings", "dtype": "bfloat16", "batching": {"max_queue": 64}},
    }
    app = create_app(Settings(tokenizer_threads=3, lazy=True), parse_catalog({"models": models}, ROOT))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://embedserve.test") as client:
            int8 = (await client.get("/info?model=int8")).json()
            bf16 = (await client.get("/info?model=bf16")).json()
    assert (int8["model_dtype"], bf16["model_dtype"]) == ("int8", "bfloat16")
    assert int8["tokenization_workers"] == bf16["tokenization_workers"] == 3
    assert (int8["max_concurrent_requests"], bf16["max_concurrent_requests"]) == (8192, 64)


async def test_root_route_serves_the_models_type(client: httpx.AsyncClient) -> None:
    np.testing.assert_allclose(await _ok(client, "/", inputs=TEXTS), await _native(client, TEXTS), atol=1e-6)
    ranked = await _ok(client, "/", headers={"x-model": "tiny-rerank"}, query=QUERY, texts=DOCS)
    assert sorted(r["index"] for r in ranked) == [0, 1, 2]
    sparse = await _ok(client, "/", model="tiny-sparse", inputs=TEXTS[0])
    assert all(set(e) == {"index", "value"} for e in sparse[0])
    response = await client.post("/", json={"inputs": "x"}, headers={"x-model": "tiny-rerank"})
    assert response.status_code == 422 and "'query' is required" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "error_type", "fragment"),
    [
        ("/embed", {"inputs": []}, {}, 400, "Empty", "'inputs' is an empty list"),
        ("/embed", {"inputs": ["a", ""]}, {}, 400, "Empty", "inputs[1] is an empty string"),
        ("/embed", {"inputs": ["a"] * 17}, {}, 413, "Validation", "17 items; the limit is 16"),
        ("/embed", {"inputs": "a", "dimensions": 99}, {}, 413, "Validation", "between 1 and 32"),
        ("/embed", {"inputs": "a", "prompt_name": "nope"}, {}, 413, "Validation", "unknown prompt_name"),
        ("/embed", {}, {}, 422, "Validation", "'inputs' is required"),
        ("/embed", {"inputs": "a"}, {"x-model": "tiny-sparse"}, 400, "Validation", "needs a model of type embeddings"),
        ("/embed", {"inputs": "a"}, {"x-model": "nope"}, 404, "NotFound", "model 'nope' does not exist"),
        ("/embed", {"inputs": "a", "model": "broken"}, {}, 503, "Unhealthy", "failed to load"),
        ("/rerank", {"query": "q", "texts": []}, {}, 400, "Empty", "'texts' is an empty list"),
        ("/decode", {"ids": [5, 99999]}, {}, 413, "Validation", "ids[1]: token id 99999 is not in the vocabulary"),
        ("/decode", {"ids": [[5], []]}, {}, 400, "Empty", "ids[1] is an empty list of token ids"),
        ("/similarity", {"inputs": {"source_sentence": "", "sentences": ["a"]}}, {}, 400, "Empty", "source_sentence"),
    ],
)
async def test_errors_are_tei_bodies(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    error_type: str,
    fragment: str,
) -> None:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "error_type"}
    assert response.json()["error_type"] == error_type and fragment in response.json()["error"], response.json()


async def test_wrong_method_on_a_tei_route_is_a_tei_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/embed")
    assert response.status_code == 405 and set(response.json()) == {"error", "error_type"}

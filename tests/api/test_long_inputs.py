"""``long_inputs`` through the real app with tiny models: chunked dense and sparse vectors against
sentence-transformers' own vectors of each window, chunked rerank against the library's scores
of each window, each dialect's mapping, usage and errors."""

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

from embedserve import fusion
from embedserve.api import create_app
from embedserve.catalog import parse_catalog
from embedserve.engines.base import SparseVector
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
SENTENCE = "the quick brown fox jumps over the lazy dog. "  # every word one token: a window's text re-tokenizes to it
LONG = SENTENCE * 36  # 360 tokens: windows of the tiny models' 128 and 64
MEDIUM = SENTENCE * 10  # 100 tokens: 4 windows of chunked-dense's 32
QUERY = "where is the fox"


@pytest.fixture(scope="module")
def app(tiny_models: dict[str, Path]) -> FastAPI:
    dense, rerank = str(tiny_models["dense"]), str(tiny_models["rerank"])
    data = tiny_catalog_data(
        tiny_models,
        **{
            "tiny-rerank": {
                "name": rerank,
                "type": "rerank",
                "engine": "cross-encoder",
                "device": "cpu",
                "max_length": 64,
                "chunk_overlap": 8,
            },
            "chunked-dense": {
                "name": dense,
                "type": "embeddings",
                "device": "cpu",
                "max_length": 32,
                "long_inputs": "chunk",
                "chunk_overlap": 4,
            },
            "chunked-fusion": {
                "type": "rerank",
                "engine": "fusion",
                "fuse": {"dense": "tiny-dense", "sparse": "tiny-sparse"},
                "long_inputs": "chunk",
            },
        },
    )
    data["models"]["tiny-sparse"]["chunk_overlap"] = 16
    settings = Settings(max_inputs=16, max_input_chars=2000, max_chunks_per_input=12, max_chunks_per_request=16)
    return create_app(settings, parse_catalog(data, ROOT))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def hf(tiny_models: dict[str, Path]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_models["dense"]))


async def _ok(client: httpx.AsyncClient, path: str, **body: Any) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _windows(hf: Any, text: str, length: int, overlap: int) -> list[str]:
    """The text of each window transformers makes of ``text`` (``length`` tokens, ``overlap`` shared)."""
    out = hf(text, max_length=length, truncation=True, stride=overlap, return_overflowing_tokens=True,
             return_offsets_mapping=True)  # fmt: skip
    spans = [[o for o in offsets if o != (0, 0)] for offsets in out["offset_mapping"]]
    return [text[s[0][0] : s[-1][1]] for s in spans]


async def test_dense_chunk_is_the_token_weighted_mean_of_the_windows(
    client: httpx.AsyncClient, tiny_models: dict[str, Path], hf: Any
) -> None:
    from sentence_transformers import SentenceTransformer

    body = await _ok(
        client, "/v1/embeddings", model="tiny-dense", input=[LONG, "short"], long_inputs="chunk",
        options={"return_chunks": True},
    )  # fmt: skip
    windows = _windows(hf, LONG, 128, 32)
    assert len(windows) == 4
    model = SentenceTransformer(str(tiny_models["dense"]), device="cpu")
    alone = model.encode(windows)  # each window embedded on its own (the model normalizes)
    weights = np.array([len(hf(w, add_special_tokens=False)["input_ids"]) for w in windows], dtype=np.float64)
    mean = weights @ alone / weights.sum()
    first = body["data"][0]
    np.testing.assert_allclose(first["embedding"], mean / np.linalg.norm(mean), atol=1e-5)
    assert [LONG[c["start"] : c["end"]] for c in first["chunks"]] == windows
    np.testing.assert_allclose([c["embedding"] for c in first["chunks"]], alone, atol=1e-5)
    np.testing.assert_allclose(body["data"][1]["embedding"], model.encode("short"), atol=1e-5)
    assert body["data"][1]["chunks"] == [{"embedding": body["data"][1]["embedding"], "start": 0, "end": 5}]
    every_token = sum(len(hf(w)["input_ids"]) for w in windows) + len(hf("short")["input_ids"])
    assert body["usage"] == {"prompt_tokens": every_token, "total_tokens": every_token}
    truncated = await _ok(client, "/v1/embeddings", model="tiny-dense", input=[LONG])
    assert truncated["usage"]["total_tokens"] == 128
    np.testing.assert_allclose(truncated["data"][0]["embedding"], model.encode(LONG), atol=1e-5)


async def test_sparse_chunk_is_the_element_wise_max_of_the_windows(
    client: httpx.AsyncClient, tiny_models: dict[str, Path], hf: Any
) -> None:
    from sentence_transformers import SparseEncoder

    body = await _ok(
        client, "/api/v1/embed_sparse", model="tiny-sparse", input=LONG, long_inputs="chunk",
        options={"return_chunks": True},
    )  # fmt: skip
    windows = _windows(hf, LONG, 64, 16)
    model = SparseEncoder(str(tiny_models["sparse"]), device="cpu")
    model.max_seq_length = 64
    alone = model.encode(windows, convert_to_tensor=True).to_dense().numpy()
    expected = alone.max(axis=0)
    [item] = body["data"]
    assert item["indices"] == list(np.flatnonzero(expected))
    np.testing.assert_allclose(item["values"], expected[item["indices"]], rtol=1e-4, atol=1e-6)
    assert [LONG[c["start"] : c["end"]] for c in item["chunks"]] == windows
    assert body["usage"]["total_tokens"] == sum(len(hf(w)["input_ids"]) for w in windows)


async def test_cross_encoder_scores_a_document_by_its_best_window(
    client: httpx.AsyncClient, tiny_models: dict[str, Path], hf: Any
) -> None:
    from sentence_transformers import CrossEncoder

    documents = [LONG, "a fox in the garden"]
    body = await _ok(client, "/api/v1/rerank", model="tiny-rerank", query=QUERY, documents=documents,
                     long_inputs="chunk")  # fmt: skip
    out = hf(QUERY, LONG, max_length=64, truncation="only_second", stride=8, return_overflowing_tokens=True,
             return_offsets_mapping=True)  # fmt: skip
    windows = []
    for i, offsets in enumerate(out["offset_mapping"]):
        doc = [o for o, seq in zip(offsets, out.sequence_ids(i), strict=True) if seq == 1]
        windows.append(LONG[doc[0][0] : doc[-1][1]])
    model = CrossEncoder(str(tiny_models["rerank"]), device="cpu", max_length=64)
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert scores[0] == pytest.approx(float(model.predict([(QUERY, w) for w in windows]).max()), abs=1e-5)
    assert scores[1] == pytest.approx(float(model.predict([(QUERY, documents[1])])[0]), abs=1e-5)
    assert body["usage"]["total_tokens"] == sum(map(len, out["input_ids"])) + len(hf(QUERY, documents[1])["input_ids"])
    capped = await _ok(client, "/api/v1/rerank", model="tiny-rerank", query=QUERY, documents=documents,
                       max_chunks_per_doc=2)  # fmt: skip
    first_two = float(model.predict([(QUERY, w) for w in windows[:2]]).max())
    assert {r["index"]: r["relevance_score"] for r in capped["results"]}[0] == pytest.approx(first_two, abs=1e-5)


async def test_similarity_reranker_scores_the_best_window(
    client: httpx.AsyncClient, tiny_models: dict[str, Path], hf: Any
) -> None:
    from sentence_transformers import SentenceTransformer

    body = await _ok(client, "/api/v1/rerank", model="tiny-similarity", query=QUERY, documents=[LONG],
                     long_inputs="chunk")  # fmt: skip
    model = SentenceTransformer(str(tiny_models["dense"]), device="cpu")
    cosines = model.encode(_windows(hf, LONG, 128, 32)) @ model.encode(QUERY)
    assert body["results"][0]["relevance_score"] == pytest.approx(float(cosines.max()), abs=1e-5)


async def test_fusion_chunk_takes_each_models_best_window(client: httpx.AsyncClient) -> None:
    body = await _ok(client, "/api/v1/rerank", model="chunked-fusion", query=QUERY, documents=[LONG, "a fox"])
    dense = await _ok(client, "/v1/embeddings", model="tiny-dense", input=[LONG, "a fox"], long_inputs="chunk",
                      options={"return_chunks": True, "prompt_name": "document"})  # fmt: skip
    query = await _ok(client, "/v1/embeddings", model="tiny-dense", input=QUERY, options={"prompt_name": "query"})
    sparse = await _ok(client, "/api/v1/embed_sparse", model="tiny-sparse", input=[LONG, "a fox"],
                       long_inputs="chunk", options={"return_chunks": True})  # fmt: skip
    q_body = await _ok(client, "/api/v1/embed_sparse", model="tiny-sparse", input=QUERY)
    q_sparse = q_body["data"][0]

    def vector(item: dict[str, Any]) -> SparseVector:
        return SparseVector(np.array(item["indices"]), np.array(item["values"], dtype=np.float32))

    expected = fusion.chunked_scores(
        np.array(query["data"][0]["embedding"]),
        [np.array([c["embedding"] for c in d["chunks"]]) for d in dense["data"]],
        vector(q_sparse),
        [[vector(c) for c in d["chunks"]] for d in sparse["data"]],
    )
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert [got[0], got[1]] == pytest.approx(list(expected), abs=1e-5)
    parts = (query, dense, sparse, q_body)
    assert body["usage"]["total_tokens"] == sum(part["usage"]["total_tokens"] for part in parts)


async def test_the_catalogue_default_and_truncate_true(client: httpx.AsyncClient, hf: Any) -> None:
    default = await _ok(client, "/v1/embeddings", model="chunked-dense", input=MEDIUM)
    chunked = await _ok(client, "/v1/embeddings", model="chunked-dense", input=MEDIUM, long_inputs="chunk")
    assert default == chunked and default["usage"]["total_tokens"] > 32
    cut = await _ok(client, "/v1/embeddings", model="chunked-dense", input=MEDIUM, truncate=True)
    same = await _ok(client, "/v1/embeddings", model="chunked-dense", input=MEDIUM, long_inputs="truncate")
    assert cut == same and cut["usage"]["total_tokens"] == 32
    refused = await client.post("/v1/embeddings", json={"model": "chunked-dense", "input": MEDIUM, "truncate": False})
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "input[0]"


async def test_tei_truncate_maps_to_long_inputs(client: httpx.AsyncClient) -> None:
    native = await _ok(client, "/v1/embeddings", model="chunked-dense", input=[MEDIUM])
    tei = await _ok(client, "/embed", model="chunked-dense", inputs=MEDIUM)  # no truncate: the model's chunk
    np.testing.assert_allclose(tei[0], native["data"][0]["embedding"], atol=1e-6)
    cut = await _ok(client, "/v1/embeddings", model="chunked-dense", input=[MEDIUM], long_inputs="truncate")
    np.testing.assert_allclose((await _ok(client, "/embed", model="chunked-dense", inputs=MEDIUM, truncate=True))[0],
                               cut["data"][0]["embedding"], atol=1e-6)  # fmt: skip
    refused = await client.post("/embed", json={"model": "chunked-dense", "inputs": MEDIUM, "truncate": False})
    assert refused.status_code == 413 and refused.json()["error_type"] == "Validation"  # TEI's status for it


async def test_cohere_sdk_truncate_chunk_and_max_chunks_per_doc(app: FastAPI, client: httpx.AsyncClient) -> None:
    import cohere

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://embedserve.test") as http:
        co = cohere.AsyncClient(api_key="unused", base_url="http://embedserve.test", httpx_client=http)
        embedded = await co.embed(texts=[LONG], model="tiny-dense", truncate="CHUNK")
        reranked = await co.rerank(query=QUERY, documents=[LONG, "a fox"], model="tiny-rerank", max_chunks_per_doc=2)
    native = await _ok(client, "/v1/embeddings", model="tiny-dense", input=[LONG], long_inputs="chunk")
    np.testing.assert_allclose(embedded.embeddings[0], native["data"][0]["embedding"], atol=1e-6)
    capped = await _ok(client, "/api/v1/rerank", model="tiny-rerank", query=QUERY, documents=[LONG, "a fox"],
                       max_chunks_per_doc=2)  # fmt: skip
    assert [(r.index, pytest.approx(r.relevance_score, abs=1e-6)) for r in reranked.results] == [
        (r["index"], r["relevance_score"]) for r in capped["results"]
    ]
    v2 = await client.post("/v2/embed", json={"model": "tiny-dense", "texts": [LONG], "truncate": "NONE",
                                              "embedding_types": ["float"]})  # fmt: skip
    assert v2.status_code == 400 and "texts[0]" in v2.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/embeddings", {"input": "x", "long_inputs": "split"}, 422, "long_inputs"),
        ("/v1/embeddings", {"input": "x", "long_inputs": "chunk", "truncate": True}, 422, "long_inputs"),
        ("/v1/embeddings", {"input": "x", "options": {"return_chunks": True}}, 422, "options.return_chunks"),
        ("/api/v1/embed_sparse", {"input": "x", "long_inputs": "error", "truncate": True}, 422, "long_inputs"),
        ("/v1/embeddings", {"model": "chunked-dense", "input": LONG}, 413, "input[0]"),
        # five different texts: a text repeated in a request is windowed and computed once (the cache)
        ("/v1/embeddings", {"model": "chunked-dense", "input": [f"{i} {MEDIUM}" for i in range(5)]}, 413, "input"),
        (
            "/api/v1/rerank",
            {"query": "q", "documents": ["d"], "long_inputs": "truncate", "max_chunks_per_doc": 2},
            422,
            "max_chunks_per_doc",
        ),
        ("/api/v1/rerank", {"query": "q", "documents": ["d"], "max_chunks_per_doc": 0}, 422, "max_chunks_per_doc"),
    ],
)
async def test_bad_values_and_window_caps_name_the_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param, error

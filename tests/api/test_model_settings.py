"""A model's own configuration (``config_sentence_transformers.json``) served as sentence-transformers
applies it, merged with the catalogue: prompts by every dialect, the default prompt, the similarity
function, ``truncate_dim`` and ``max_seq_length``. Tiny random models whose config files a fixture
writes; each served output is compared with the library's own on the same directory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from helpers.app_client import app_client
from helpers.server import ROOT
from helpers.tiny_models import saved_as_sentence_transformers, with_settings
from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder
from sentence_transformers.util import cos_sim

from embedserve.api import create_app
from embedserve.catalog import ModelSpec, parse_catalog
from embedserve.engines.sentence_transformers import own_settings
from embedserve.model_settings import read_model_config
from embedserve.settings import Settings

pytestmark = pytest.mark.anyio
TEXTS = ["the cat sat on the mat", "a stock market crash"]
LONG = " ".join(["the committee reviewed the budget and the hiring plan"] * 8)  # > 32 tokens
CATALOGUE_PROMPTS = {"query": "q: ", "code": "code: "}
# E5's prompt names, Matryoshka truncation and a dot-product similarity
E5 = {
    "prompts": {"query": "query: ", "passage": "passage: "},
    "similarity_fn_name": "dot",
    "truncate_dim": 16,
}
# nomic-embed's prompt names, with a default prompt and the manhattan similarity
NOMIC = {
    "prompts": {"search_query": "search_query: ", "search_document": "search_document: ", "clustering": "clu: "},
    "default_prompt_name": "search_document",
    "similarity_fn_name": "manhattan",
}


@pytest.fixture(scope="module")
def dirs(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("model-settings")
    sparse = saved_as_sentence_transformers("sparse", tiny_models["sparse"], root / "sparse-saved")
    rerank = saved_as_sentence_transformers("rerank", tiny_models["rerank"], root / "rerank-saved")
    instructor = with_settings(tiny_models["dense"], root / "instructor", prompts={"query": "Represent the question: "})
    pooling = instructor / "1_Pooling" / "config.json"  # pooling leaves the prompt's tokens out, as INSTRUCTOR's
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "include_prompt": False}))
    return {
        "instructor": instructor,
        "e5": with_settings(tiny_models["dense"], root / "e5", max_seq_length=32, **E5),
        "nomic": with_settings(tiny_models["dense"], root / "nomic", **NOMIC),
        "sparse": with_settings(sparse, root / "sparse", prompts={"query": "query: "}),
        "rerank": with_settings(rerank, root / "rerank", prompts={"judge": "judge: "}, default_prompt_name="judge"),
    }


def _entry(path: Path, kind: str = "embeddings", **fields: Any) -> dict[str, Any]:
    return {"name": str(path), "type": kind, "device": "cpu", **fields}


@pytest.fixture(scope="module")
def app(dirs: dict[str, Path]) -> FastAPI:
    models = {
        "instructor": _entry(dirs["instructor"]),
        "e5": _entry(dirs["e5"]),
        "nomic": _entry(dirs["nomic"]),
        "overridden": _entry(dirs["e5"], prompts=CATALOGUE_PROMPTS, default_prompt="query", dimensions=8),
        "no-default": _entry(dirs["nomic"], default_prompt=None),
        "bad-default": _entry(dirs["e5"], default_prompt="nope"),
        "sparse": _entry(dirs["sparse"], "sparse-embeddings"),
        "similarity": _entry(dirs["e5"], "rerank", engine="similarity"),
        "cross": _entry(dirs["rerank"], "rerank", engine="cross-encoder"),
    }
    return create_app(Settings(max_inputs=16), parse_catalog({"models": models}, ROOT))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def library(dirs: dict[str, Path]) -> dict[str, SentenceTransformer]:
    return {
        "instructor": SentenceTransformer(str(dirs["instructor"]), device="cpu"),
        "e5": SentenceTransformer(str(dirs["e5"]), device="cpu"),
        "nomic": SentenceTransformer(str(dirs["nomic"]), device="cpu"),
        # the catalogue's settings are what sentence-transformers' own constructor arguments do
        "overridden": SentenceTransformer(
            str(dirs["e5"]), device="cpu", prompts=CATALOGUE_PROMPTS, default_prompt_name="query", truncate_dim=8
        ),
    }


async def _post(client: httpx.AsyncClient, path: str, **body: Any) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _served(client: httpx.AsyncClient, dialect: str, model: str, texts: list[str], **fields: Any) -> np.ndarray:
    if dialect == "tei":
        return np.array(await _post(client, "/embed", model=model, inputs=texts, **fields))
    if dialect == "cohere":
        body = await _post(client, "/v2/embed", model=model, texts=texts, embedding_types=["float"], **fields)
        return np.array(body["embeddings"]["float"])
    data = (await _post(client, "/v1/embeddings", model=model, input=texts, **fields))["data"]
    return np.array([d["embedding"] for d in data])


# (model, dialect, request fields, the prompt_name sentence-transformers gets: None for encode's default)
CASES = [
    ("e5", "openai", {}, None),
    ("e5", "openai", {"options": {"prompt_name": "passage"}}, "passage"),
    ("e5", "openai", {"task": "retrieval.query"}, "query"),
    ("e5", "openai", {"task": "retrieval.passage"}, "passage"),  # "passage: ", not the empty "document"
    ("e5", "cohere", {"input_type": "search_query"}, "query"),
    ("e5", "cohere", {"input_type": "search_document"}, "passage"),
    ("e5", "tei", {"prompt_name": "query"}, "query"),
    ("nomic", "openai", {}, "search_document"),  # its default_prompt_name
    ("nomic", "openai", {"task": "retrieval.query"}, "search_query"),
    ("nomic", "openai", {"task": "separation"}, "clustering"),
    ("nomic", "openai", {"task": "text-matching"}, None),  # no prompt for it: the default applies
    ("nomic", "cohere", {"input_type": "search_document"}, "search_document"),
    ("nomic", "cohere", {"input_type": "clustering"}, "clustering"),
    ("nomic", "tei", {"prompt_name": "search_query"}, "search_query"),
    ("overridden", "openai", {}, None),  # the catalogue's default: its own query prompt
    ("overridden", "openai", {"options": {"prompt_name": "passage"}}, "passage"),  # the model's
    ("overridden", "openai", {"options": {"prompt_name": "code"}}, "code"),  # the catalogue's
    ("overridden", "cohere", {"input_type": "search_query"}, "query"),
    ("instructor", "openai", {"task": "retrieval.query"}, "query"),  # pooled without the prompt's tokens
    ("instructor", "openai", {}, None),
]


@pytest.mark.parametrize(("model", "dialect", "fields", "prompt_name"), CASES)
async def test_served_equals_encode_with_the_prompt(
    client: httpx.AsyncClient,
    library: dict[str, SentenceTransformer],
    model: str,
    dialect: str,
    fields: dict[str, Any],
    prompt_name: str | None,
) -> None:
    served = await _served(client, dialect, model, TEXTS, **fields)
    expected = library[model].encode(TEXTS, prompt_name=prompt_name, normalize_embeddings=True)
    assert served.shape == expected.shape  # truncate_dim / dimensions: 16 for e5, 8 overridden, 32 nomic
    np.testing.assert_allclose(served, expected, atol=1e-5)


async def test_listing_shows_the_merged_prompts_and_their_origin(client: httpx.AsyncClient) -> None:
    info = await _get(client, "/api/v1/models/overridden")
    assert info["prompts"] == ["code", "document", "passage", "query"]
    assert info["prompt_texts"] == {
        "code": {"text": "code: ", "origin": "catalogue"},
        "document": {"text": "", "origin": "model"},  # sentence-transformers' own empty document prompt
        "passage": {"text": "passage: ", "origin": "model"},
        "query": {"text": "q: ", "origin": "catalogue"},
    }
    assert (info["default_prompt"], info["default_prompt_origin"]) == ("query", "catalogue")
    assert (info["dimension"], info["max_dimension"], info["dimensions_origin"]) == (8, 32, "catalogue")
    assert (info["max_length"], info["max_length_origin"], info["similarity"]) == (32, "model", "dot")
    nomic = await _get(client, "/v1/models/nomic")
    assert (nomic["default_prompt"], nomic["default_prompt_origin"], nomic["similarity"]) == (
        "search_document",
        "model",
        "manhattan",
    )
    assert nomic["prompt_texts"]["clustering"] == {"text": "clu: ", "origin": "model"} and nomic["settings_read"]
    assert (await _get(client, "/api/v1/models/no-default"))["default_prompt"] is None
    e5 = await _get(client, "/api/v1/models/e5")
    assert (e5["dimension"], e5["dimensions_origin"]) == (16, "model")
    tei = await _get(client, "/info?model=overridden")
    assert tei["prompts"] == {"code": "code: ", "document": "", "passage": "passage: ", "query": "q: "}


async def _get(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def test_default_prompt_turned_off_by_the_catalogue(
    client: httpx.AsyncClient, library: dict[str, SentenceTransformer]
) -> None:
    served = await _served(client, "openai", "no-default", TEXTS)
    expected = library["nomic"].encode(TEXTS, prompt="", normalize_embeddings=True)
    np.testing.assert_allclose(served, expected, atol=1e-5)


async def test_unknown_prompt_name_lists_the_merged_names(client: httpx.AsyncClient) -> None:
    body = {"model": "overridden", "input": "x", "options": {"prompt_name": "nope"}}
    response = await client.post("/v1/embeddings", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["param"] == "options.prompt_name"
    assert error["message"] == "unknown prompt_name 'nope'; prompts: code, document, passage, query"
    tei = await client.post("/embed", json={"model": "nomic", "inputs": "x", "prompt_name": "retrieval.query"})
    names = "prompts: clustering, document, query, search_document, search_query"
    assert tei.status_code == 413 and names in tei.json()["error"]


async def test_a_default_prompt_the_model_lacks_fails_its_load(client: httpx.AsyncClient) -> None:
    info = await _get(client, "/api/v1/models/bad-default")
    assert info["state"] == "failed"
    assert "default_prompt 'nope' names no prompt of this model; prompts: document, passage, query" in info["error"]


async def test_request_dimensions_override_truncate_dim(
    client: httpx.AsyncClient, library: dict[str, SentenceTransformer]
) -> None:
    full = await _served(client, "openai", "e5", TEXTS, dimensions=32)
    expected = library["e5"].encode(TEXTS, truncate_dim=32, normalize_embeddings=True)
    assert full.shape == (2, 32)
    np.testing.assert_allclose(full, expected, atol=1e-5)
    raw = await _served(client, "openai", "e5", TEXTS, options={"normalize_embeddings": False})
    np.testing.assert_allclose(raw, library["e5"].encode(TEXTS), atol=1e-5)  # cut after the model's Normalize
    response = await client.post("/v1/embeddings", json={"model": "e5", "input": "x", "dimensions": 33})
    assert response.status_code == 422 and "between 1 and 32" in response.json()["error"]["message"]


async def test_max_seq_length_is_the_default_token_limit(
    client: httpx.AsyncClient, library: dict[str, SentenceTransformer]
) -> None:
    assert library["e5"].max_seq_length == 32
    served = await _served(client, "openai", "e5", [LONG])
    np.testing.assert_allclose(served, library["e5"].encode([LONG], normalize_embeddings=True), atol=1e-5)
    response = await client.post("/v1/embeddings", json={"model": "e5", "input": LONG, "truncate": False})
    assert response.status_code == 422 and "reads at most 32" in response.json()["error"]["message"]


@pytest.mark.parametrize("model", ["e5", "nomic"])
async def test_tei_similarity_uses_the_models_function(
    client: httpx.AsyncClient, library: dict[str, SentenceTransformer], model: str
) -> None:
    source, sentences = "heart disease", ["the heart pumps blood", "apple pie", LONG]
    body = {"model": model, "inputs": {"source_sentence": source, "sentences": sentences}}
    served = await _post(client, "/similarity", **body)
    st = library[model]
    expected = st.similarity(st.encode([source]), st.encode(sentences))[0].numpy()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)
    cosine = cos_sim(st.encode([source]), st.encode(sentences))[0].numpy()
    assert not np.allclose(served, cosine, atol=1e-3)  # not the cosine TEI's route always gave


async def test_similarity_reranker_uses_the_models_prompts_and_function(
    client: httpx.AsyncClient, library: dict[str, SentenceTransformer]
) -> None:
    query, documents = "heart disease", ["the heart pumps blood", "apple pie", "blood pressure"]
    body = await _post(client, "/api/v1/rerank", model="similarity", query=query, documents=documents)
    st = library["e5"]
    expected = st.similarity(st.encode([query], prompt_name="query"), st.encode(documents, prompt_name="passage"))[0]
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([scores[i] for i in range(3)], expected.numpy(), rtol=1e-5, atol=1e-5)
    assert [r["index"] for r in body["results"]] == list(np.argsort(-expected.numpy(), kind="stable"))


async def test_sparse_reads_the_models_prompts(client: httpx.AsyncClient, dirs: dict[str, Path]) -> None:
    library = SparseEncoder(str(dirs["sparse"]), device="cpu")
    body = await _post(client, "/embed_sparse", model="sparse", inputs=TEXTS, prompt_name="query")
    expected = library.encode(TEXTS, prompt_name="query").to_dense().numpy()
    for row, want in zip(body, expected, strict=True):
        got = np.zeros_like(want)
        got[[item["index"] for item in row]] = [item["value"] for item in row]
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert (await _get(client, "/api/v1/models/sparse"))["prompt_texts"]["query"]["origin"] == "model"


async def test_cross_encoder_applies_its_default_prompt(client: httpx.AsyncClient, dirs: dict[str, Path]) -> None:
    library = CrossEncoder(str(dirs["rerank"]), device="cpu")
    assert library.default_prompt_name == "judge"
    query, documents = "heart disease", ["the heart pumps blood", "apple pie", "blood pressure"]
    body = await _post(client, "/api/v1/rerank", model="cross", query=query, documents=documents)
    expected = library.predict([(query, d) for d in documents])
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([scores[i] for i in range(3)], expected, atol=1e-5)
    plain = library.predict([(query, d) for d in documents], prompt="")
    assert not np.allclose(expected, plain)  # the prompt changes the scores: the check above means something


async def test_reading_the_files_agrees_with_the_library(
    dirs: dict[str, Path], library: dict[str, SentenceTransformer]
) -> None:
    """``embedserve models`` reads the files; a loaded engine reports what the library read: the same."""
    loaded = {
        "e5": ("embeddings", None, library["e5"]),
        "nomic": ("embeddings", None, library["nomic"]),
        "sparse": ("sparse-embeddings", None, SparseEncoder(str(dirs["sparse"]), device="cpu")),
        "rerank": ("rerank", "cross-encoder", CrossEncoder(str(dirs["rerank"]), device="cpu")),
    }
    for key, (kind, engine, model) in loaded.items():
        spec = ModelSpec(name=str(dirs[key]), type=kind, engine=engine)
        from_files, from_library = read_model_config(dirs[key], spec), own_settings(model)
        assert from_files.prompts == from_library.prompts, key
        assert from_files.default_prompt_name == from_library.default_prompt_name, key
        assert from_files.truncate_dim == from_library.truncate_dim, key
        if key != "rerank":  # a cross-encoder has no similarity function
            assert from_files.similarity_fn_name == from_library.similarity_fn_name, key
        assert from_files.max_seq_length == from_library.max_seq_length, key

"""The real client libraries against the real server, each used as its documentation shows.

Every result is compared with what the native routes return for the same model and text.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import cohere
import httpx
import numpy as np
import openai
import pytest
from helpers.server import Server

DENSE = "all-minilm-l6-v2"
SPARSE = "splade-tiny"
RERANK = "hybrid-rerank"
TEXTS = ["A man is playing a guitar.", "The stock market fell sharply today.", "hello"]
QUERY = "What causes heart attacks?"
DOCS = ["The weather is sunny.", "Heart attacks are caused by blocked arteries.", "Stocks fell.", "Blood pressure."]


@pytest.fixture(scope="module")
def native(default_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=default_server.url, timeout=60) as c:
        yield c


def _post(client: httpx.Client, path: str, **body: Any) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def native_vectors(client: httpx.Client, texts: list[str], **body: Any) -> np.ndarray:
    data = _post(client, "/api/v1/embeddings", model=DENSE, input=texts, **body)["data"]
    return np.array([d["embedding"] for d in data], dtype=np.float64)


def native_scores(client: httpx.Client, query: str, documents: list[str]) -> dict[int, float]:
    results = _post(client, "/api/v1/rerank", model=RERANK, query=query, documents=documents)["results"]
    return {r["index"]: r["relevance_score"] for r in results}


# ---- OpenAI ------------------------------------------------------------------------------------


def test_openai_token_ids_and_the_input_limit(default_server: Server, native: httpx.Client) -> None:
    with openai.OpenAI(base_url=f"{default_server.url}/v1", api_key="unused", max_retries=0) as client:
        ids = [[1037, 2158, 2003, 2652, 1037, 2858, 1012]]  # "a man is playing a guitar." in the model's vocabulary
        got = client.embeddings.create(model=DENSE, input=ids)
        np.testing.assert_allclose(
            got.data[0].embedding, native_vectors(native, ["a man is playing a guitar."])[0], atol=1e-6
        )
        with pytest.raises(openai.APIStatusError) as caught:
            client.embeddings.create(model=DENSE, input=["hi"] * 2049)
        assert caught.value.status_code == 413 and "2049 items; the limit is 2048" in caught.value.message


def test_langchain_openai(default_server: Server, native: httpx.Client) -> None:
    from langchain_openai import OpenAIEmbeddings

    with httpx.Client() as http:  # closed here; langchain leaves its own clients open
        embeddings = OpenAIEmbeddings(
            model=DENSE,
            base_url=f"{default_server.url}/v1",
            api_key="unused",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,  # send text, not tiktoken ids (which would also need a download)
            http_client=http,
        )
        expected = native_vectors(native, TEXTS)
        np.testing.assert_allclose(embeddings.embed_documents(TEXTS), expected, atol=1e-6)
        np.testing.assert_allclose(embeddings.embed_query(TEXTS[0]), expected[0], atol=1e-6)


@pytest.mark.anyio
async def test_langchain_openai_async(default_server: Server, native: httpx.Client) -> None:
    from langchain_openai import OpenAIEmbeddings

    async with httpx.AsyncClient() as http:
        embeddings = OpenAIEmbeddings(
            model=DENSE,
            base_url=f"{default_server.url}/v1",
            api_key="unused",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
            dimensions=64,
            http_async_client=http,
        )
        got = await embeddings.aembed_documents(TEXTS)
    np.testing.assert_allclose(got, native_vectors(native, TEXTS, dimensions=64), atol=1e-6)


# ---- Cohere ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def co(default_server: Server) -> Iterator[cohere.ClientV2]:
    with cohere.ClientV2(api_key="unused", base_url=default_server.url) as client:
        yield client


def test_cohere_v2_rerank(co: cohere.ClientV2, native: httpx.Client) -> None:
    response = co.rerank(model=RERANK, query=QUERY, documents=DOCS, top_n=2)
    expected = native_scores(native, QUERY, DOCS)
    assert [r.index for r in response.results] == list(expected)[:2] and response.results[0].index == 1
    for r in response.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-6)
    assert response.meta is not None and response.meta.api_version is not None
    assert response.meta.api_version.version == "2"
    cut = co.rerank(model=RERANK, query=QUERY, documents=DOCS, max_tokens_per_doc=512)
    assert [r.index for r in cut.results] == list(expected)


def test_cohere_v2_embed_several_types(co: cohere.ClientV2, native: httpx.Client) -> None:
    types = ["float", "int8", "ubinary", "base64"]
    response = co.embed(model=DENSE, texts=TEXTS, input_type="search_document", embedding_types=types)
    embeddings = response.embeddings
    np.testing.assert_allclose(embeddings.float_, native_vectors(native, TEXTS), atol=1e-6)
    np.testing.assert_array_equal(embeddings.int8, native_vectors(native, TEXTS, options={"precision": "int8"}))
    np.testing.assert_array_equal(embeddings.ubinary, native_vectors(native, TEXTS, options={"precision": "ubinary"}))
    decoded = [np.frombuffer(base64.b64decode(b), dtype="<f4") for b in embeddings.base64 or []]
    np.testing.assert_allclose(decoded, native_vectors(native, TEXTS), atol=1e-6)
    assert response.texts == TEXTS and response.meta is not None
    small = co.embed(
        model=DENSE, texts=TEXTS, input_type="search_query", embedding_types=["float"], output_dimension=128
    )
    np.testing.assert_allclose(small.embeddings.float_, native_vectors(native, TEXTS, dimensions=128), atol=1e-6)


def test_cohere_errors(co: cohere.ClientV2) -> None:
    with pytest.raises(cohere.NotFoundError) as missing:
        co.embed(model="no-such-model", texts=["x"], input_type="search_query")
    assert "no-such-model" in str(missing.value.body)
    with pytest.raises(cohere.BadRequestError) as bad:
        co.rerank(model=RERANK, query=QUERY, documents=["ok", ""])
    assert bad.value.body == {"message": "documents[1] is an empty string; every text needs at least one character"}


def test_cohere_v1_client_rerank_and_embed(default_server: Server, native: httpx.Client) -> None:
    with cohere.Client(api_key="unused", base_url=default_server.url) as co_v1:
        response = co_v1.rerank(model=RERANK, query=QUERY, documents=DOCS, top_n=3, return_documents=True)
        expected = native_scores(native, QUERY, DOCS)
        assert [r.index for r in response.results] == list(expected)[:3]
        for r in response.results:
            assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-6)
            assert r.document is not None and r.document.text == DOCS[r.index]
        floats = co_v1.embed(model=DENSE, texts=TEXTS)
        assert floats.response_type == "embeddings_floats"
        np.testing.assert_allclose(floats.embeddings, native_vectors(native, TEXTS), atol=1e-6)


# ---- Hugging Face TEI --------------------------------------------------------------------------


@pytest.fixture
def hub_client_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub refuses every request, even to 127.0.0.1, when HF_HUB_OFFLINE (or
    TRANSFORMERS_OFFLINE) is set in the client's process; only the server needs it. This test
    process sets it for the models it loads, so the hub clients run as in a process without it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.mark.usefixtures("hub_client_process")
def test_huggingface_hub_feature_extraction(default_server: Server, native: httpx.Client) -> None:
    from huggingface_hub import InferenceClient

    expected = native_vectors(native, TEXTS)
    client = InferenceClient(model=default_server.url)  # POST /: the default model is an embeddings model
    np.testing.assert_allclose(client.feature_extraction(TEXTS), expected, atol=1e-6)
    one = InferenceClient(model=f"{default_server.url}/embed").feature_extraction(TEXTS[0], normalize=True)
    np.testing.assert_allclose(one, expected[:1], atol=1e-6)
    similar = InferenceClient(model=f"{default_server.url}/similarity").sentence_similarity(TEXTS[0], TEXTS[1:])
    assert similar == pytest.approx(list(expected[1:] @ expected[0]), abs=1e-5)


@pytest.mark.usefixtures("hub_client_process")
def test_huggingface_hub_picks_a_model_by_header(default_server: Server, native: httpx.Client) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    dense = InferenceClient(model=default_server.url, headers={"X-Model": DENSE}).feature_extraction(TEXTS)
    np.testing.assert_allclose(dense, native_vectors(native, TEXTS), atol=1e-6)
    with pytest.raises(HfHubHTTPError) as caught:
        InferenceClient(model=f"{default_server.url}/embed", headers={"X-Model": RERANK}).feature_extraction("x")
    assert caught.value.response is not None and caught.value.response.status_code == 400
    assert caught.value.response.json()["error_type"] == "Validation"


@pytest.mark.usefixtures("hub_client_process")
def test_langchain_huggingface(default_server: Server, native: httpx.Client) -> None:
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    embeddings = HuggingFaceEndpointEmbeddings(model=default_server.url)
    expected = native_vectors(native, TEXTS)
    np.testing.assert_allclose(embeddings.embed_documents(TEXTS), expected, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(TEXTS[1]), expected[1], atol=1e-6)
    # 1.2.2 and later refuse a URL as model: docs/api/tei.md's way round it, a hub id and the clients swapped
    from huggingface_hub import InferenceClient

    swapped = HuggingFaceEndpointEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2")
    swapped.client = InferenceClient(model=default_server.url)
    np.testing.assert_allclose(swapped.embed_documents(TEXTS), expected, atol=1e-6)


def test_llama_index_text_embeddings_inference(default_server: Server, native: httpx.Client) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    model = TextEmbeddingsInference(model_name=DENSE, base_url=default_server.url, embed_batch_size=2)
    expected = native_vectors(native, TEXTS)
    np.testing.assert_allclose(model.get_text_embedding_batch(TEXTS), expected, atol=1e-6)
    np.testing.assert_allclose(model.get_query_embedding(TEXTS[0]), expected[0], atol=1e-6)


def test_tei_rerank_and_sparse_equal_native(native: httpx.Client) -> None:
    ranked = _post(native, "/rerank", query=QUERY, texts=DOCS)
    expected = native_scores(native, QUERY, DOCS)
    assert [r["index"] for r in ranked] == list(expected)
    assert [r["score"] for r in ranked] == pytest.approx(list(expected.values()), abs=1e-6)
    sparse = _post(native, "/embed_sparse", inputs=TEXTS)
    data = _post(native, "/api/v1/embed_sparse", model=SPARSE, input=TEXTS)["data"]
    for row, item in zip(sparse, data, strict=True):
        assert [e["index"] for e in row] == item["indices"]
        np.testing.assert_allclose([e["value"] for e in row], item["values"], rtol=1e-6)

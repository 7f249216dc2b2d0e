"""OpenAI's token-id input and Jina's extras on /v1/embeddings, against tiny models in-process."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def app(fake_app: FastAPI) -> FastAPI:
    """The dialect's fields need no real numbers: the catalogue on the fake engine."""
    return fake_app


TEXTS = ["the cat sat on the mat", "a stock market crash"]
# all-MiniLM-L6-v2's vocabulary (the tiny models share its tokenizer), without [CLS] and [SEP]
IDS = [[1996, 4937, 2938, 2006, 1996, 13523], [1037, 4518, 3006, 5823]]


async def _post(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/embeddings", json={"model": "tiny-dense", **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _vectors(client: httpx.AsyncClient, **body: Any) -> np.ndarray:
    return np.array([d["embedding"] for d in (await _post(client, **body))["data"]], dtype=np.float64)


async def test_token_ids_are_the_models_own_vocabulary(client: httpx.AsyncClient) -> None:
    texts = await _vectors(client, input=TEXTS)
    np.testing.assert_allclose(await _vectors(client, input=IDS), texts, atol=1e-6)
    one = await _post(client, input=IDS[0])  # a list of integers is one input
    assert len(one["data"]) == 1
    np.testing.assert_allclose(one["data"][0]["embedding"], texts[0], atol=1e-6)
    assert one["usage"]["prompt_tokens"] == len(IDS[0]) + 2


@pytest.mark.parametrize(
    ("value", "param", "fragment"),
    [
        ([1996, 40000], "input[1]", "token id 40000 is not in the vocabulary of model 'tiny-dense' (ids 0 to 30521)"),
        ([[1996], [5, -1]], "input[1][1]", "token id -1 is not in the vocabulary"),
        ([[1996], []], "input[1]", "input[1] is an empty list of token ids"),
        ([1996, "cat"], "input[1]", "must be a token id (an integer) like input[0], got string"),
        ([[1996], [2.5]], "input[1][0]", "must be a token id (an integer), got number"),
        ([[1996], 7], "input[1]", "must be a list of token ids like input[0], got integer"),
        ([True, False], "input[0]", "must be a string or a token id, got boolean"),
        ([101, 102], "input", "decode to no text"),
    ],
)
async def test_token_id_errors_name_the_item(client: httpx.AsyncClient, value: Any, param: str, fragment: str) -> None:
    response = await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": value})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error


async def test_jina_task_picks_the_models_prompt(client: httpx.AsyncClient) -> None:
    query = await _vectors(client, input=TEXTS, options={"prompt_name": "query"})
    document = await _vectors(client, input=TEXTS, options={"prompt_name": "document"})
    np.testing.assert_allclose(await _vectors(client, input=TEXTS, task="retrieval.query"), query, atol=1e-6)
    np.testing.assert_allclose(await _vectors(client, input=TEXTS, task="retrieval.passage"), document, atol=1e-6)
    plain = await _vectors(client, input=TEXTS)  # no prompt of that purpose: the model's default (none)
    np.testing.assert_allclose(await _vectors(client, input=TEXTS, task="text-matching"), plain, atol=1e-6)


async def test_jina_embedding_type_normalized_and_text_objects(client: httpx.AsyncClient) -> None:
    floats = await _vectors(client, input=TEXTS)
    body = await _post(client, input=[{"text": t} for t in TEXTS], embedding_type="base64", dimensions=16)
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    cut = floats[:, :16] / np.linalg.norm(floats[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(decoded, cut, atol=1e-6)
    binary = await _vectors(client, input=TEXTS, embedding_type="binary")
    np.testing.assert_array_equal(binary, await _vectors(client, input=TEXTS, options={"precision": "binary"}))
    raw = await _vectors(client, input=TEXTS, normalized=False)
    np.testing.assert_allclose(raw, await _vectors(client, input=TEXTS, options={"normalize_embeddings": False}))
    assert await _vectors(client, input=TEXTS, late_chunking=False) == pytest.approx(floats)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"late_chunking": True}, "late_chunking", "not supported"),
        ({"normalized": True, "options": {"normalize_embeddings": False}}, "normalized", "disagree"),
        ({"task": "retrieval.query", "options": {"prompt_name": "query"}}, "task", "not both"),
        ({"embedding_type": "base64", "encoding_format": "float"}, "embedding_type", "disagree"),
        ({"embedding_type": "binary", "options": {"precision": "int8"}}, "embedding_type", "disagree"),
        ({"task": "summarize"}, "task", "'retrieval.query'"),
        ({"input": [{"image": "x"}]}, "input[0]", "must be a string, got object"),
    ],
)
async def test_jina_conflicts_are_422s(
    client: httpx.AsyncClient, body: dict[str, Any], param: str, fragment: str
) -> None:
    response = await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": "x", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"], error

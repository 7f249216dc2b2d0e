"""POST /api/v1/embeddings (and /v1/embeddings) against tiny models in-process."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.anyio
TEXTS = ["the cat sat on the mat", "a stock market crash", "hello", "quantum chromodynamics lecture notes"]


async def _embed(client: httpx.AsyncClient, **body: Any) -> np.ndarray:
    response = await client.post("/api/v1/embeddings", json={"model": "tiny-dense", **body})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data])


@pytest.fixture(scope="module")
def library(tiny_models: dict[str, Path]) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_models["dense"]), device="cpu")


async def test_response_shape_and_usage(client: httpx.AsyncClient, library: SentenceTransformer) -> None:
    response = await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": TEXTS[0], "user": "u1"})
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "list" and body["model"] == "tiny-dense"
    assert body["data"][0]["object"] == "embedding" and len(body["data"][0]["embedding"]) == 32
    expected_tokens = len(library.tokenizer(TEXTS[0])["input_ids"])
    assert body["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}


async def test_equals_the_library_encode(client: httpx.AsyncClient, library: SentenceTransformer) -> None:
    served = await _embed(client, input=TEXTS)
    np.testing.assert_allclose(served, library.encode(TEXTS), atol=1e-6)


async def test_batch_equals_one_by_one(client: httpx.AsyncClient) -> None:
    batch = await _embed(client, input=TEXTS)
    singles = np.vstack([await _embed(client, input=t) for t in TEXTS])
    np.testing.assert_allclose(batch, singles, atol=1e-6)


async def test_base64_is_little_endian_float32_of_the_same_vector(client: httpx.AsyncClient) -> None:
    floats = await _embed(client, input=TEXTS[:2])
    response = await client.post(
        "/api/v1/embeddings", json={"model": "tiny-dense", "input": TEXTS[:2], "encoding_format": "base64"}
    )
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]]
    np.testing.assert_array_equal(np.vstack(decoded), floats.astype(np.float32))


@pytest.mark.parametrize("dims", [1, 8, 32])
async def test_dimensions_gives_unit_vectors_of_that_length(client: httpx.AsyncClient, dims: int) -> None:
    full = await _embed(client, input=TEXTS)
    cut = await _embed(client, input=TEXTS, dimensions=dims)
    assert cut.shape == (len(TEXTS), dims)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    expected = full[:, :dims] / np.linalg.norm(full[:, :dims], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


async def test_dimensions_above_the_model_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/embeddings", json={"model": "tiny-dense", "input": "x", "dimensions": 33})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "dimensions"
    assert "between 1 and 32" in response.json()["error"]["message"]


async def test_prompts_change_the_input(client: httpx.AsyncClient, library: SentenceTransformer) -> None:
    plain = await _embed(client, input=TEXTS[:1])
    named = await _embed(client, input=TEXTS[:1], options={"prompt_name": "query"})
    literal = await _embed(client, input=TEXTS[:1], options={"prompt": "query: "})
    np.testing.assert_allclose(named, literal, atol=1e-6)
    np.testing.assert_allclose(named, library.encode(TEXTS[:1], prompt="query: "), atol=1e-6)
    assert not np.allclose(plain, named)
    bad = await client.post(
        "/api/v1/embeddings", json={"model": "tiny-dense", "input": "x", "options": {"prompt_name": "z"}}
    )
    assert bad.status_code == 422 and "prompts: document, query" in bad.json()["error"]["message"]


async def test_default_prompt_from_catalogue_counts_in_usage(
    client: httpx.AsyncClient, library: SentenceTransformer
) -> None:
    response = await client.post("/api/v1/embeddings", json={"model": "capped", "input": "hi"})
    assert response.json()["usage"]["prompt_tokens"] == len(library.tokenizer("query: hi")["input_ids"])
    np.testing.assert_allclose(
        response.json()["data"][0]["embedding"], library.encode(["hi"], prompt="query: ")[0], atol=1e-6
    )


@pytest.mark.parametrize(
    ("precision", "dtype", "width"),
    [("int8", np.int8, 32), ("uint8", np.uint8, 32), ("binary", np.int8, 4), ("ubinary", np.uint8, 4)],
)
async def test_precision(client: httpx.AsyncClient, precision: str, dtype: type, width: int) -> None:
    floats = await _embed(client, input=TEXTS)
    values = await _embed(client, input=TEXTS, options={"precision": precision})
    assert values.shape == (len(TEXTS), width)
    info = np.iinfo(dtype)
    assert values.min() >= info.min and values.max() <= info.max
    if precision == "ubinary":
        np.testing.assert_array_equal(values, np.packbits(floats > 0, axis=-1))
    b64 = await client.post(
        "/api/v1/embeddings",
        json={"model": "tiny-dense", "input": TEXTS, "encoding_format": "base64", "options": {"precision": precision}},
    )
    decoded = np.vstack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=dtype) for d in b64.json()["data"]])
    np.testing.assert_array_equal(decoded, values)


async def test_normalize_off_returns_raw_output(client: httpx.AsyncClient) -> None:
    # the tiny model ends with a Normalize module, so raw output is unit-length too; dims show the difference
    raw = await _embed(client, input=TEXTS, dimensions=8, options={"normalize_embeddings": False})
    full = await _embed(client, input=TEXTS)
    np.testing.assert_allclose(raw, full[:, :8], atol=1e-6)


async def test_truncation_by_default_and_422_when_off(client: httpx.AsyncClient) -> None:
    long_text = "word " * 50  # "capped" reads 8 tokens
    ok = await client.post("/api/v1/embeddings", json={"model": "capped", "input": long_text})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == 8
    refused = await client.post(
        "/api/v1/embeddings", json={"model": "capped", "input": ["hi", long_text], "truncate": False}
    )
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["param"] == "input[1]" and error["code"] == "input_too_long"
    assert "has 54 tokens" in error["message"]  # "query: " + 50 words + [CLS] [SEP] and "at most 8" in error["message"]


async def test_default_model_is_first_embeddings_model(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/embeddings", json={"input": "x"})
    assert response.status_code == 200 and response.json()["model"] == "tiny-dense"

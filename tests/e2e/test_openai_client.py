"""The official ``openai`` SDK against the real server: ``/v1`` and ``/api/v1`` as base URLs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import openai
import pytest
from helpers.server import Server
from openai import AsyncOpenAI, OpenAI

MODEL = "all-minilm-l6-v2"
TEXTS = ["A man is playing a guitar.", "The stock market fell sharply today.", "hello"]
MODEL_IDS = {"all-minilm-l6-v2", "splade-tiny", "hybrid-rerank"}


@pytest.fixture(scope="module", params=["/v1", "/api/v1"])
def client(request: pytest.FixtureRequest, default_server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{default_server.url}{request.param}", api_key="unused", max_retries=0) as c:
        yield c


def test_base64_default_and_float_give_the_same_vectors(client: OpenAI) -> None:
    default = client.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks for base64 and decodes it
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    a = np.array([d.embedding for d in default.data])
    b = np.array([d.embedding for d in floats.data])
    assert a.shape == b.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert [d.index for d in default.data] == list(range(len(TEXTS)))
    assert default.model == MODEL
    assert default.usage.prompt_tokens > 0
    assert default.usage.prompt_tokens == floats.usage.prompt_tokens


def test_dimensions(client: OpenAI) -> None:
    response = client.embeddings.create(model=MODEL, input=TEXTS, dimensions=128)
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="no-such-model", input="x")
    assert "no-such-model" in caught.value.message
    assert caught.value.status_code == 404


def test_models_list(client: OpenAI) -> None:
    assert {m.id for m in client.models.list()} == MODEL_IDS
    assert client.models.retrieve("splade-tiny").id == "splade-tiny"


@pytest.mark.anyio
async def test_async_client(default_server: Server) -> None:
    async with AsyncOpenAI(base_url=f"{default_server.url}/v1", api_key="unused", max_retries=0) as client:
        default = await client.embeddings.create(model=MODEL, input=TEXTS)
        floats = await client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
        a = np.array([d.embedding for d in default.data])
        b = np.array([d.embedding for d in floats.data])
        assert a.shape == (len(TEXTS), 384)
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert default.usage.prompt_tokens > 0
        cut = await client.embeddings.create(model=MODEL, input=TEXTS, dimensions=128)
        assert all(len(d.embedding) == 128 for d in cut.data)
        assert {m.id async for m in client.models.list()} == MODEL_IDS
        with pytest.raises(openai.NotFoundError, match="no-such-model"):
            await client.embeddings.create(model="no-such-model", input="x")

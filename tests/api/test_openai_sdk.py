"""The official openai SDK (async) against the app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def app(fake_app: FastAPI) -> FastAPI:
    """The SDK's requests and responses need no real numbers: the catalogue on the fake engine."""
    return fake_app


@pytest.fixture
async def sdk(client: httpx.AsyncClient) -> AsyncIterator[openai.AsyncOpenAI]:
    http = httpx.AsyncClient(transport=client._transport, base_url=client.base_url)
    async with openai.AsyncOpenAI(base_url="http://embedserve.test/v1", api_key="unused", http_client=http) as sdk:
        yield sdk


async def test_default_base64_and_float_agree(sdk: openai.AsyncOpenAI) -> None:
    texts = ["first text", "second, longer text"]
    default = await sdk.embeddings.create(model="tiny-dense", input=texts)  # the SDK asks for base64
    floats = await sdk.embeddings.create(model="tiny-dense", input=texts, encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 32
    np.testing.assert_allclose([d.embedding for d in default.data], [d.embedding for d in floats.data], atol=1e-7)
    assert default.usage.prompt_tokens == floats.usage.prompt_tokens > 0


async def test_dimensions_and_errors(sdk: openai.AsyncOpenAI) -> None:
    cut = await sdk.embeddings.create(model="tiny-dense", input="x", dimensions=8)
    assert len(cut.data[0].embedding) == 8
    with pytest.raises(openai.NotFoundError, match="model 'nope' does not exist"):
        await sdk.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.UnprocessableEntityError, match="between 1 and 32"):
        await sdk.embeddings.create(model="tiny-dense", input="x", dimensions=99)
    assert "tiny-dense" in {m.id async for m in sdk.models.list()}

"""Bad input: every error is a JSON envelope naming the field and the limit, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def app(fake_app: FastAPI) -> FastAPI:
    """Errors need no real numbers: the catalogue on the fake engine."""
    return fake_app


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"input": []}, 422, "input", "empty list"),
        ({"input": ""}, 422, "input[0]", "empty string"),
        ({"input": ["ok", ""]}, 422, "input[1]", "empty string"),
        ({"input": ["ok", 3]}, 422, "input[2 - 1]".replace("2 - 1", "1"), "must be a string, got integer"),
        ({"input": ["ok", None]}, 422, "input[1]", "got null"),
        ({"input": 7}, 422, "input", "string or a list of strings, got integer"),
        ({"input": None}, 422, "input", "got null"),
        ({}, 422, "input", "'input' is required"),
        ({"input": "x", "dimensions": 0}, 422, "dimensions", "greater than or equal to 1"),
        ({"input": "x", "dimensions": "8"}, 422, "dimensions", "valid integer"),
        ({"input": "x", "encoding_format": "hex"}, 422, "encoding_format", "'float' or 'base64'"),
        ({"input": "x", "options": {"colour": 1}}, 422, "options.colour", "unknown field"),
        ({"input": "x", "options": {"precision": "int4"}}, 422, "options.precision", "float32"),
        ({"input": "x", "options": {"prompt": "a", "prompt_name": "query"}}, 422, "options.prompt_name", "not both"),
        ({"input": "x", "surprise": True}, 422, "surprise", "unknown field"),
        ({"input": ["a"] * 17}, 413, "input", "17 items; the limit is 16"),
        ({"input": "a" * 2001}, 413, "input[0]", "2001 characters; the limit is 2000"),
        ({"input": ["a"] * 3, "model": "capped"}, 413, "input", "the limit is 2"),
        ({"input": "x", "model": "nope"}, 404, "model", "available models: broken, capped, lazy-dense"),
        ({"input": "x", "model": "tiny-rerank"}, 400, "model", "needs a model of type embeddings: tiny-dense"),
        ({"input": "x", "model": "broken"}, 503, "model", "failed to load"),
    ],
)
async def test_embeddings_errors(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, param: str, fragment: str
) -> None:
    response = await client.post(
        "/api/v1/embeddings", json={"model": "tiny-dense", **body} if "model" not in body else body
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and fragment in error["message"], error


@pytest.mark.parametrize(
    ("content", "headers", "fragment"),
    [
        (b"{not json", {"content-type": "application/json"}, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, "must be a JSON object"),
        (b"", {"content-type": "application/json"}, "request body is required"),
        (b'{"input": "\xff\xfe"}', {"content-type": "application/json"}, "send a UTF-8 JSON object"),
        (b'{"input": ["a", "x\\ud800"]}', {"content-type": "application/json"}, "input[1] is not valid Unicode"),
    ],
)
async def test_malformed_bodies(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], fragment: str
) -> None:
    response = await client.post("/api/v1/embeddings", content=content, headers=headers)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code != 200:
        assert fragment in response.json()["error"]["message"]


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "route_not_found"
    wrong = await client.get("/api/v1/embeddings")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_sparse_errors_name_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/embed_sparse", json={"input": "x", "options": {"top_k": 0}})
    assert response.status_code == 422 and response.json()["error"]["param"] == "options.top_k"
    response = await client.post("/api/v1/embed_sparse", json={"input": "x", "model": "tiny-dense"})
    assert response.status_code == 400

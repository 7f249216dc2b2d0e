"""The eval client against a fake server: default models, request order, errors."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from embedserve.catalog import parse_catalog
from embedserve.evaluation.client import Client, ServerError
from embedserve.registry import Registry

MODELS = [
    {"id": "d1", "type": "embeddings", "dimension": 3, "prompts": []},
    {"id": "s1", "type": "sparse-embeddings", "dimension": None, "prompts": ["query"]},
    {"id": "d2", "type": "embeddings", "dimension": 3, "prompts": [], "default": True},
    {"id": "r1", "type": "rerank"},
]


def _client(handler: httpx.MockTransport, batch_size: int = 2) -> Client:
    client = Client("http://fake", batch_size=batch_size)
    client.http = httpx.Client(base_url="http://fake", transport=handler)
    return client


def _server(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/v1/models":
        return httpx.Response(200, json={"models": MODELS, "total": len(MODELS)})
    body = json.loads(request.content)
    if request.url.path == "/api/v1/embeddings":
        # each text's embedding is [its length, 0, 0], listed in reverse to check the index handling
        data = [{"index": i, "embedding": [len(t), 0, 0]} for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"data": data[::-1]})
    if request.url.path == "/api/v1/embed_sparse":
        data = [{"index": i, "indices": [len(t)], "values": [1.0]} for i, t in enumerate(body["input"])]
        return httpx.Response(200, json={"data": data})
    return httpx.Response(422, json={"error": {"message": "bad"}})


def test_default_models_prefer_the_flag_then_the_first_of_each_type() -> None:
    chosen = _client(httpx.MockTransport(_server)).default_models()
    assert {kind: m.id for kind, m in chosen.items()} == {"embeddings": "d2", "sparse-embeddings": "s1", "rerank": "r1"}
    assert chosen["sparse-embeddings"].prompt_for("query") == "query"
    assert chosen["sparse-embeddings"].prompt_for("document") is None


@pytest.mark.anyio
async def test_the_servers_own_listing_flags_the_catalogues_default(tmp_path: Path) -> None:
    """The listing the registry serves (not a hand-made one) carries ``default`` for the client."""
    catalog = parse_catalog(
        {
            "models": {
                "first": {"name": "a/first", "type": "embeddings", "preload": False},
                "chosen": {"name": "a/chosen", "type": "embeddings", "preload": False, "default": True},
            }
        },
        tmp_path,
        check_sources=False,
    )
    registry = Registry(catalog, factory=lambda entry: pytest.fail("nothing loads"))
    listing = [handle.info() for handle in registry.models.values()]
    await registry.close()

    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"models": listing, "total": len(listing)})

    assert _client(httpx.MockTransport(server)).default_models()["embeddings"].id == "chosen"


def test_results_come_back_in_input_order_whatever_the_batching() -> None:
    texts = ["aaa", "a", "aaaaa", "aa", "aaaa"]  # sent longest first, two a request
    client = _client(httpx.MockTransport(_server))
    assert client.embed("d1", texts)[:, 0].tolist() == [3, 1, 5, 2, 4]
    assert [int(v.indices[0]) for v in client.embed_sparse("s1", texts)] == [3, 1, 5, 2, 4]
    assert client.embed("d1", []).shape[0] == 0 and np.asarray(client.embed("d1", ["x"])).shape == (1, 3)


def test_server_errors_carry_status_and_body() -> None:
    with pytest.raises(ServerError, match=r"POST /api/v1/rerank: HTTP 422: .*bad"):
        _client(httpx.MockTransport(_server)).rerank("r1", "q", ["d"])


def test_prompt_for_follows_the_servers_choice_for_a_purpose() -> None:
    from embedserve.evaluation.client import _model_info

    texts = {"query": "query: ", "document": "", "passage": "passage: "}  # E5's, with the library's empty document
    entry = {"id": "e5", "type": "embeddings", "dimension": 3, "prompts": sorted(texts)}
    e5 = _model_info({**entry, "prompt_texts": {k: {"text": v, "origin": "model"} for k, v in texts.items()}})
    assert (e5.prompt_for("query"), e5.prompt_for("document")) == ("query", "passage")
    nomic = _model_info({"id": "n", "type": "embeddings", "prompts": ["search_document", "search_query"]})
    assert (nomic.prompt_for("query"), nomic.prompt_for("document")) == ("search_query", "search_document")

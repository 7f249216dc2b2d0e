"""A table of bad (and odd but valid) requests, each with the status it must get, against the real
server. Nothing a client sends may be answered with a 5xx, hang, or leak a traceback."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from robustness.support import count, record

EVERY_PLANE = ["é", "😀", "\U00020000", "\U00030000", "\U000e0001", "\U000f0000", "\U0010fffd", "\u0000", "\ufeff"]
TEN_MB = "a" * (10 * 1024 * 1024)
INFINITY_OPTION = b'{"input": "a", "options": {"normalize_embeddings": Infinity}}'
COHERE_RERANK = {"model": "tiny-rerank", "query": "q", "documents": ["a"]}


def raw(text: str) -> bytes:
    return text.encode("utf-8")


# (id, method, path, body: JSON-able, or bytes sent as they are, expected status)
CASES: list[tuple[str, str, str, Any, int]] = [
    # OpenAI / native embeddings
    ("invalid-json", "POST", "/v1/embeddings", raw('{"input": '), 422),
    ("body-not-an-object", "POST", "/v1/embeddings", [1, 2], 422),
    ("empty-body", "POST", "/v1/embeddings", b"", 422),
    ("input-wrong-type", "POST", "/v1/embeddings", {"input": 42}, 422),
    ("input-null", "POST", "/v1/embeddings", {"input": None}, 422),
    ("input-item-null", "POST", "/v1/embeddings", {"input": ["a", None]}, 422),
    ("input-empty-list", "POST", "/v1/embeddings", {"input": []}, 422),
    ("input-empty-string", "POST", "/v1/embeddings", {"input": ""}, 422),
    ("input-whitespace", "POST", "/v1/embeddings", {"input": ["   ", "\n\t"]}, 200),
    ("invalid-utf8-bytes", "POST", "/v1/embeddings", b'{"input": "\xff\xfe abc"}', 400),
    ("lone-surrogate", "POST", "/v1/embeddings", raw('{"input": "a\\ud800b"}'), 422),
    ("ten-mb-string", "POST", "/v1/embeddings", {"input": TEN_MB}, 413),
    ("100k-inputs", "POST", "/v1/embeddings", {"input": ["a"] * 100_000}, 413),
    ("deep-nesting", "POST", "/v1/embeddings", raw('{"input": ' + "[" * 500 + "]" * 500 + "}"), 422),
    ("nan-dimensions", "POST", "/v1/embeddings", raw('{"input": "a", "dimensions": NaN}'), 422),
    (
        "infinity-option",
        "POST",
        "/v1/embeddings",
        INFINITY_OPTION,
        422,
    ),
    ("unknown-field", "POST", "/v1/embeddings", {"input": "a", "colour": "red"}, 422),
    ("unknown-option", "POST", "/v1/embeddings", {"input": "a", "options": {"colour": 1}}, 422),
    ("negative-dimensions", "POST", "/v1/embeddings", {"input": "a", "dimensions": -3}, 422),
    ("huge-dimensions", "POST", "/v1/embeddings", {"input": "a", "dimensions": 10**30}, 422),
    ("wrong-model-type", "POST", "/v1/embeddings", {"input": "a", "model": "tiny-sparse"}, 400),
    ("unknown-model", "POST", "/v1/embeddings", {"input": "a", "model": "no-such-model"}, 404),
    ("model-wrong-type", "POST", "/v1/embeddings", {"input": "a", "model": 7}, 422),
    ("every-unicode-plane", "POST", "/v1/embeddings", {"input": EVERY_PLANE}, 200),
    ("token-id-out-of-vocab", "POST", "/v1/embeddings", {"input": [[5, 999_999_999]]}, 422),
    ("token-id-huge", "POST", "/v1/embeddings", {"input": [2**70]}, 422),
    ("token-id-negative", "POST", "/v1/embeddings", {"input": [-1]}, 422),
    ("bool-as-token", "POST", "/v1/embeddings", {"input": [True]}, 422),
    ("text-plain-content-type", "POST", "/v1/embeddings", "plain", 422),
    # native sparse and rerank
    ("sparse-top-k-zero", "POST", "/api/v1/embed_sparse", {"input": "a", "options": {"top_k": 0}}, 422),
    ("sparse-top-k-huge", "POST", "/api/v1/embed_sparse", {"input": "a", "options": {"top_k": 10**12}}, 200),
    ("rerank-top-n-negative", "POST", "/api/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, 422),
    ("rerank-top-n-huge", "POST", "/api/v1/rerank", {"query": "q", "documents": ["a", "b"], "top_n": 10**12}, 200),
    ("rerank-empty-query", "POST", "/api/v1/rerank", {"query": "", "documents": ["a"]}, 422),
    ("rerank-documents-null", "POST", "/api/v1/rerank", {"query": "q", "documents": None}, 422),
    ("rerank-1001-documents", "POST", "/api/v1/rerank", {"query": "q", "documents": ["d"] * 1001}, 413),
    ("rerank-dense-model", "POST", "/api/v1/rerank", {"query": "q", "documents": ["a"], "model": "tiny-dense"}, 400),
    # Cohere: 400 for every invalid request
    (
        "cohere-top-n-negative",
        "POST",
        "/v2/rerank",
        {**COHERE_RERANK, "top_n": -1},
        400,
    ),
    (
        "cohere-texts-empty",
        "POST",
        "/v2/embed",
        {"model": "tiny-dense", "texts": []},
        400,
    ),
    ("cohere-invalid-json", "POST", "/v1/embed", raw("{texts: [}"), 400),
    ("cohere-every-plane", "POST", "/v1/embed", {"model": "tiny-dense", "texts": EVERY_PLANE}, 200),
    # TEI
    ("tei-inputs-empty-list", "POST", "/embed", {"inputs": []}, 400),
    ("tei-inputs-empty-string", "POST", "/embed", {"inputs": ""}, 400),
    ("tei-negative-dimensions", "POST", "/embed", {"inputs": "a", "dimensions": -5}, 422),
    ("tei-nan-normalize", "POST", "/embed", raw('{"inputs": "a", "normalize": NaN}'), 422),
    ("tei-rerank-3000-texts", "POST", "/rerank", {"query": "q", "texts": ["t"] * 3000}, 413),
    ("tei-decode-huge-id", "POST", "/decode", {"ids": [2**64]}, 413),
    ("tei-decode-nested-wrong", "POST", "/decode", {"ids": [[1, "a"]]}, 422),
    ("tei-tokenize-every-plane", "POST", "/tokenize", {"inputs": EVERY_PLANE}, 200),
    ("tei-similarity-missing", "POST", "/similarity", {"inputs": {"source_sentence": "a"}}, 422),
    ("tei-predict-not-object", "POST", "/", raw('"just a string"'), 422),
    ("tei-header-model-mismatch", "POST", "/embed", {"inputs": "a", "model": "tiny-dense", "x-model": "faulty"}, 413),
    # models and unknown routes
    ("model-id-10k-chars", "GET", "/api/v1/models/" + "m" * 10_000, None, 404),
    ("info-unknown-model", "GET", "/info?model=nope", None, 404),
    ("unknown-route", "GET", "/v3/embeddings", None, 404),
    ("wrong-method", "GET", "/v1/embeddings", None, 405),
]


def send(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    headers = {}
    if isinstance(body, dict) and "x-model" in body:
        headers["x-model"] = body.pop("x-model")
    if body is None:
        return client.request(method, path, headers=headers)
    if isinstance(body, bytes):
        return client.request(method, path, content=body, headers={**headers, "content-type": "application/json"})
    if isinstance(body, str):
        return client.request(method, path, content=body, headers={**headers, "content-type": "text/plain"})
    return client.request(
        method, path, content=json.dumps(body), headers={**headers, "content-type": "application/json"}
    )


@pytest.mark.parametrize(("method", "path", "body", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_its_status(client: httpx.Client, method: str, path: str, body: Any, status: int) -> None:
    response = send(client, method, path, dict(body) if isinstance(body, dict) else body)
    count([response], "bad_inputs")
    record("bad_inputs_tried", 1)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    text = response.text
    assert "Traceback" not in text and 'File "' not in text
    if status >= 400:
        assert len(text) < 2000, "an error body should be a short message, not an echo of the input"


def test_the_server_is_still_healthy_after_the_table(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    response = client.post("/v1/embeddings", json={"model": "tiny-dense", "input": ["still here"]})
    assert response.status_code == 200

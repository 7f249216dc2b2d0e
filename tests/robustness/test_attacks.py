"""Attacks on the request path (issue 18): each must leave /health fast and memory bounded, and get
a clear status, against the real server process. The figures of each go to the summary table."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from helpers.server import Server
from robustness.support import attack, count


def test_tokenize_of_long_multibyte_texts_is_linear(open_server: Server, open_client: httpx.Client) -> None:
    """Byte offsets of every token of two 100,000-character texts of emoji and accents: once
    quadratic on the event loop (/health blocked for seconds)."""
    texts = ["😀 " * 50_000, "é " * 50_000]
    with attack(open_server, "tokenize-multibyte-offsets") as a:
        response = open_client.post("/tokenize", json={"inputs": texts, "add_special_tokens": False})
        a.saw(response.status_code)
    count([response], "attacks")
    assert response.status_code == 200, response.text[:300]
    rows = response.json()
    assert [len(row) for row in rows] == [50_000] * 2
    last = rows[1][-1]
    assert (last["start"], last["stop"]) == (3 * 49_999, 3 * 49_999 + 2), last  # "é" is 2 bytes, " " 1
    assert rows[0][1]["start"] == 5  # after "😀 " (4 + 1 bytes)
    a.check(health_s=3.0, rss_mib=600)  # 200,000 tokens built and written: linear, not tens of seconds


def test_a_million_unknown_fields_are_refused_at_once(open_server: Server, open_client: httpx.Client) -> None:
    """1.2 million unknown fields (a 14 MB body): once 9.7 s of validation with /health blocked."""
    body = b'{"input": "a", ' + b",".join(b'"%x":1' % i for i in range(1_200_000)) + b"}"
    few_body = json.dumps({"input": "a", **{f"f{i}": 1 for i in range(50_000)}}).encode()
    with attack(open_server, "unknown-fields-1.2M") as a:
        started = time.monotonic()
        response = open_client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
        elapsed = time.monotonic() - started
        a.saw(response.status_code)
        few = open_client.post("/v1/embeddings", content=few_body, headers={"content-type": "application/json"})
        a.saw(few.status_code)
    count([response, few], "attacks")
    assert response.status_code == 422 and response.json()["error"]["code"] == "too_many_fields", response.text
    assert few.status_code == 422 and few.json()["error"]["message"] == "unknown field 'f0'", few.text[:300]
    assert elapsed < 5, f"took {elapsed:.1f} s"
    a.check(health_s=3.0, rss_mib=600)


FIVE_MB = "x" * (5 << 20)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"input": "a", FIVE_MB: 1}),
        ("/v1/embeddings", {"input": "a", "options": {FIVE_MB: 1}}),
        ("/v1/rerank", {"model": "tiny-rerank", "query": "q", "documents": [{"a": "b"}], "rank_fields": [FIVE_MB]}),
        ("/embed", {"inputs": "a", "prompt_name": FIVE_MB}),
        ("/v1/embeddings", {"input": "a", "model": FIVE_MB}),
    ],
    ids=["unknown-field", "unknown-option", "rank-fields", "tei-prompt-name", "model"],
)
def test_errors_quote_a_short_prefix_of_what_they_reject(open_client: httpx.Client, path: str, body: Any) -> None:
    response = open_client.post(path, json=body)
    count([response], "attacks")
    assert 400 <= response.status_code < 500, response.text[:300]
    assert len(response.content) < 2048, f"{len(response.content)} bytes: {response.text[:300]}"
    assert "xxxxxxxxxx" in response.text  # the name is quoted, up to a short prefix


def test_odd_bodies_and_methods(open_client: httpx.Client) -> None:
    """UTF-16 bodies are 400s; a 5,000-digit number is a 422 naming its field; HEAD works where
    GET does; /docs says where its scripts come from."""
    utf16 = open_client.post(
        "/v1/embeddings", content='{"input": "a"}'.encode("utf-16"), headers={"content-type": "application/json"}
    )
    utf32 = open_client.post(
        "/embed", content='{"inputs": "a"}'.encode("utf-32-le"), headers={"content-type": "application/json"}
    )
    digits = open_client.post(
        "/v1/embeddings", content=b'{"input": [1, ' + b"7" * 5000 + b"]}", headers={"content-type": "application/json"}
    )
    head = open_client.head("/health")
    get = open_client.get("/health")
    docs = open_client.get("/docs")
    count([utf16, utf32, digits, head, docs], "attacks")
    assert utf16.status_code == 400 and "UTF-8" in utf16.json()["error"]["message"], utf16.text
    assert utf32.status_code == 400 and utf32.json()["error_type"] == "Validation", utf32.text
    assert digits.status_code == 422 and digits.json()["error"]["param"] == "input", digits.text
    assert (
        head.status_code == 200
        and head.content == b""
        and head.headers["content-length"] == get.headers["content-length"]
    )
    assert open_client.head("/v1/embeddings").status_code == 405  # no GET there either
    csp = docs.headers["content-security-policy"]
    assert "script-src https://cdn.jsdelivr.net" in csp and "default-src 'none'" in csp


def test_state_changes_need_post_and_an_allowed_origin(open_server: Server, open_client: httpx.Client) -> None:
    """Without API keys: a cross-site POST (a form on another site) is refused, GET cannot load, and
    a Host that does not name this server (DNS rebinding) is refused; same-origin POSTs work."""
    evil = {"Origin": "http://evil.example"}
    unload = open_client.post("/api/v1/models/tiny-sparse/unload", headers=evil)
    embed = open_client.post("/v1/embeddings", json={"input": "a"}, headers=evil)
    form = open_client.post("/embed", data={"inputs": "a"}, headers=evil)
    get_load = open_client.get("/api/v1/models/tiny-sparse/load")
    rebound = open_client.get("/api/v1/models", headers={"Host": "attacker.example"})
    rebound_post = open_client.post("/v1/embeddings", json={"input": "a"}, headers={"Host": "attacker.example:80"})
    own = open_client.post("/v1/embeddings", json={"input": "a"}, headers={"Origin": open_server.url})
    localhost = open_client.post(
        "/v1/embeddings", json={"input": "a"}, headers={"Host": "localhost:" + open_server.url.rsplit(":", 1)[1]}
    )
    count([unload, embed, form, get_load, rebound, rebound_post, own, localhost], "attacks")
    assert unload.status_code == 403 and unload.json()["error"]["code"] == "origin_not_allowed", unload.text
    assert embed.status_code == 403 and form.status_code == 403
    assert get_load.status_code == 405
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "host_not_allowed", rebound.text
    assert rebound_post.status_code == 400
    assert own.status_code == 200 and localhost.status_code == 200
    assert open_client.get("/api/v1/models/tiny-sparse").json()["state"] == "ready"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"input": ["a"] * 2048, "options": {"prompt": "p" * 99_000}}),
        ("/api/v1/embed_sparse", {"input": ["a"] * 2048, "options": {"prompt": "p" * 99_000}}),
        ("/api/v1/rerank", {"model": "tiny-rerank", "query": "q" * 99_000, "documents": ["d"] * 1000}),
        ("/v1/embeddings", {"input": ["a"], "options": {"prompt": "p" * 200_000}}),
    ],
    ids=["dense-prompt-x2048", "sparse-prompt-x2048", "rerank-query-x1000", "prompt-over-the-text-limit"],
)
def test_a_prompt_counts_in_the_request_budget(
    open_server: Server, open_client: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    """A 99,000-character prompt put before 2,048 one-letter inputs (a 110 KB body): once 5 GB of RSS
    and 111 s of every other request waiting."""
    with attack(open_server, f"prompt-budget{path.replace('/', '-')}-{len(str(body)) // 1000}k") as a:
        started = time.monotonic()
        response = open_client.post(path, json=body)
        elapsed = time.monotonic() - started
        a.saw(response.status_code)
    count([response], "attacks")
    assert response.status_code == 413, response.text[:300]
    message = response.json()["error"]["message"]
    assert "limit" in message and len(response.content) < 2048, message
    assert elapsed < 5, f"took {elapsed:.1f} s"
    a.check(health_s=1.5, rss_mib=300)


def test_huge_requests_cannot_hold_the_tokenizer(open_server: Server) -> None:
    """Four concurrent 15 MB requests (150 texts of 100,000 characters each): once a normal request
    waited 84 s for a 503 behind them. Now it takes its turn between their jobs and gets its 200 at
    once; the big ones get 200, 503 at their 30 s deadline, or 429 once the tokenizer's queue is full."""
    # 150 different texts (one repeated in a request is tokenized once)
    big = json.dumps({"model": "tiny-dense", "input": [f"{j:03d} " + "word " * 19_999 for j in range(150)]}).encode()
    headers = {"content-type": "application/json"}

    async def run() -> tuple[list[int], list[float]]:
        async with httpx.AsyncClient(base_url=open_server.url, timeout=120) as client:
            hogs = [asyncio.create_task(client.post("/v1/embeddings", content=big, headers=headers)) for _ in range(4)]
            await asyncio.sleep(2)  # the big ones are being tokenized
            times = []
            for i in range(3):
                started = time.monotonic()
                small = await client.post("/v1/embeddings", json={"model": "tiny-dense", "input": [f"normal {i}"]})
                assert small.status_code == 200, small.text
                times.append(time.monotonic() - started)
            return [r.status_code for r in await asyncio.gather(*hogs)], times

    with attack(open_server, "tokenizer-hogs-4x15MB") as a:
        statuses, times = asyncio.run(run())
        a.saw(*statuses)
    count(statuses, "attacks", frozenset({503}))
    assert set(statuses) <= {200, 429, 503}, statuses
    # seconds on a busy machine (before: minutes, behind all of the big ones' tokenization)
    assert max(times) < 8.0, f"a normal request took up to {max(times):.1f} s behind the big ones"
    # /health waits behind the parsing of the 15 MB bodies on the event loop (linear in the body)
    a.check(health_s=5.0, rss_mib=1500)

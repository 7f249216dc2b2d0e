"""Attacks on the request path (issue 18): each must leave /health fast and memory bounded, and get
a clear status, against the real server process. The figures of each go to the summary table."""

from __future__ import annotations

import httpx
from helpers.server import Server
from robustness.support import attack, count


def test_tokenize_of_long_multibyte_texts_is_linear(open_server: Server, open_client: httpx.Client) -> None:
    """Byte offsets of every token of four 100,000-character texts of emoji: once quadratic on the
    event loop (/health blocked for tens of seconds)."""
    texts = ["😀 " * 50_000, "é " * 50_000, "😀 " * 50_000, "é " * 50_000]
    with attack(open_server, "tokenize-multibyte-offsets") as a:
        response = open_client.post("/tokenize", json={"inputs": texts, "add_special_tokens": False})
        a.saw(response.status_code)
    count([response], "attacks")
    assert response.status_code == 200, response.text[:300]
    rows = response.json()
    assert [len(row) for row in rows] == [50_000] * 4
    last = rows[1][-1]
    assert (last["start"], last["stop"]) == (3 * 49_999, 3 * 49_999 + 2), last  # "é" is 2 bytes, " " 1
    assert rows[0][1]["start"] == 5  # after "😀 " (4 + 1 bytes)
    a.check(health_s=1.5, rss_mib=600)

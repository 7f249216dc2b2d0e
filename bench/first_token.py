"""A cross-encoder's last layer for its first token only (src/embedserve/engines/first_token.py),
A/B in one process: the same torch model with its full last layer and with the first-token one,
alternating windows so the machine's noise falls on both alike.

The model is the batching benchmark's cross-encoder (MiniLM-L6's shape, random weights); the
inputs are SciFact (query, document) pairs, truncated at 512 tokens. Each round times one pair a
pass, then padded passes of 8 pairs, full then first-token (the other way round on odd rounds),
and prints pairs/s; the speedup is the median of the rounds' ratios::

    python bench/first_token.py                  # 6 rounds, 1 s windows
    python bench/first_token.py --rounds 10 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from batching import build_cross_encoder, load_texts  # noqa: E402
from common import write_json  # noqa: E402


def rate(model: Any, batches: list[Any], per_batch: int, seconds: float) -> float:
    """Pairs/s of ``model`` over ``batches`` (cycled) for about ``seconds``."""
    import torch

    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            model(**batches[(done // per_batch) % len(batches)])
            done += per_batch
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from embedserve.engines import passive_omp_threads
    from embedserve.engines.first_token import first_token_last_layer

    passive_omp_threads()  # as the server runs torch (before the first forward pass starts its threads)
    queries, docs = load_texts(200)
    with tempfile.TemporaryDirectory(prefix="embedserve-bench-ce-") as tmp:
        path = build_cross_encoder(Path(tmp) / "rerank")
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        full = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    fast = copy.deepcopy(full)
    assert first_token_last_layer(fast, tokenizer), "the first-token layer was refused for this model"
    pairs = list(zip(queries[:64], docs[:64], strict=False))

    def encode(chunk: list[tuple[str, str]]) -> Any:
        q, d = zip(*chunk, strict=True)
        return tokenizer(list(q), list(d), truncation=True, max_length=512, padding=True, return_tensors="pt")

    loads = {
        "1 pair a pass": ([encode([p]) for p in pairs], 1),
        "8 pairs a pass": ([encode(pairs[i : i + 8]) for i in range(0, 64, 8)], 8),
    }
    for batches, n in loads.values():  # warm-up
        rate(full, batches, n, 0.3)
        rate(fast, batches, n, 0.3)
    figures: dict[str, Any] = {}
    for name, (batches, n) in loads.items():
        rows = []
        for r in range(args.rounds):
            order = [("full", full), ("first-token", fast)]
            measured = dict(
                (label, rate(m, batches, n, args.seconds)) for label, m in (order if r % 2 == 0 else order[::-1])
            )
            rows.append(measured)
            print(
                f"{name:<15} round {r}: full {measured['full']:6.2f}/s  first-token {measured['first-token']:6.2f}/s",
                flush=True,
            )
        speedup = statistics.median(row["first-token"] / row["full"] for row in rows)
        figures[name] = {"rounds": rows, "speedup_median": round(speedup, 3)}
        print(f"{name:<15} speedup (median of rounds): {speedup:.3f}")
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

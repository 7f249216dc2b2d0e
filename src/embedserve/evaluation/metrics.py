"""Ranking metrics (nDCG@k, MRR@k, Recall@k) and reciprocal rank fusion, on plain lists.

Definitions follow ``pytrec_eval``/BEIR: nDCG uses linear gains (the relevance grade) with a
log2(rank + 1) discount and the ideal ranking of all judged documents; MRR@k is 1 / the rank of
the first relevant document within k (0 when none); Recall@k is the share of a query's relevant
documents found in the top k. Each is averaged over the judged queries; a query with no result
counts as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Ranking = Sequence[str]
"""Document ids, best first."""


def ndcg_at_k(ranking: Ranking, relevant: Mapping[str, int], k: int) -> float:
    """Normalized discounted cumulative gain of the first ``k`` results."""
    dcg = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranking: Ranking, relevant: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within ``k``, else 0."""
    for rank, doc in enumerate(ranking[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranking: Ranking, relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents that are in the first ``k`` results."""
    wanted = {doc for doc, grade in relevant.items() if grade > 0}
    return len(wanted.intersection(ranking[:k])) / len(wanted) if wanted else 0.0


def evaluate(runs: Mapping[str, Ranking], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 over every judged query, as percentages."""
    queries = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    if not queries:
        raise ValueError("no judged query with a relevant document")
    totals = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0}
    for query in queries:
        ranking, relevant = runs.get(query, ()), qrels[query]
        totals["ndcg@10"] += ndcg_at_k(ranking, relevant, 10)
        totals["mrr@10"] += mrr_at_k(ranking, relevant, 10)
        totals["recall@100"] += recall_at_k(ranking, relevant, 100)
    return {name: 100.0 * total / len(queries) for name, total in totals.items()}


def rrf(rankings: Sequence[Ranking], k: int = 60, limit: int = 100) -> list[tuple[str, float]]:
    """Reciprocal rank fusion: each document scores the sum of 1 / (k + rank) over the lists
    it is in (ranks from 1); best first, ties broken by document id (byte order), ``limit`` kept.

    The SQL in ``store`` computes the same sums in the same order, so the two agree exactly.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    fused = sorted(scores.items(), key=lambda item: (-item[1], item[0].encode()))
    return fused[:limit]

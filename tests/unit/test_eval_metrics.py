"""nDCG@k, MRR@k, Recall@k and RRF against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from embedserve.evaluation.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k, rrf

# Three relevant documents; the ranking finds two of them, at ranks 2 and 4.
RANKING = ["d3", "d1", "d7", "d2"]
RELEVANT = {"d1": 1, "d2": 1, "d9": 1}


def test_ndcg_by_hand() -> None:
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # ranks 2 and 4: 0.63093 + 0.43068
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # all three at ranks 1-3: 2.13093
    assert ndcg_at_k(RANKING, RELEVANT, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(RANKING, RELEVANT, 10) == pytest.approx(0.49819, abs=1e-5)
    # the cut: only rank 2 counts, and the ideal has two documents within 2
    assert ndcg_at_k(RANKING, RELEVANT, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_ndcg_uses_linear_graded_gains() -> None:
    # gains 1 then 2, against the ideal 2 then 1 (pytrec_eval's ndcg_cut)
    value = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 10) == pytest.approx(value)
    assert value == pytest.approx(0.85972, abs=1e-5)


def test_mrr_by_hand() -> None:
    assert mrr_at_k(RANKING, RELEVANT, 10) == 0.5
    assert mrr_at_k(RANKING, RELEVANT, 1) == 0.0
    assert mrr_at_k(["d2"], RELEVANT, 10) == 1.0
    assert mrr_at_k([], RELEVANT, 10) == 0.0


def test_recall_by_hand() -> None:
    assert recall_at_k(RANKING, RELEVANT, 100) == pytest.approx(2 / 3)
    assert recall_at_k(RANKING, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, {"x": 0}, 100) == 0.0


def test_perfect_and_empty_rankings() -> None:
    assert ndcg_at_k(["d1", "d2", "d9"], RELEVANT, 10) == pytest.approx(1.0)
    assert ndcg_at_k([], RELEVANT, 10) == 0.0


def test_evaluate_averages_over_judged_queries_as_percent() -> None:
    qrels = {"q1": RELEVANT, "q2": {"a": 1}, "q3": {"b": 0}}  # q3 has nothing relevant: not counted
    runs = {"q1": RANKING}  # q2 got no result: it counts as 0
    scores = evaluate(runs, qrels)
    assert scores["ndcg@10"] == pytest.approx(100 * 0.49819 / 2, abs=1e-3)
    assert scores["mrr@10"] == pytest.approx(25.0)
    assert scores["recall@100"] == pytest.approx(100 * (2 / 3) / 2)
    with pytest.raises(ValueError, match="no judged query"):
        evaluate(runs, {"q": {"a": 0}})


def test_rrf_by_hand() -> None:
    fused = rrf([["x", "y", "z"], ["y", "w"]], k=60)
    assert [doc for doc, _ in fused] == ["y", "x", "w", "z"]
    assert dict(fused) == pytest.approx({"y": 1 / 62 + 1 / 61, "x": 1 / 61, "w": 1 / 62, "z": 1 / 63})
    assert rrf([["x", "y", "z"]], k=60, limit=2) == [("x", 1 / 61), ("y", 1 / 62)]


def test_rrf_breaks_ties_by_document_id_in_byte_order() -> None:
    assert [doc for doc, _ in rrf([["b", "a"], ["a", "b"]], k=1)] == ["a", "b"]
    assert [doc for doc, _ in rrf([["a"], ["B"]])] == ["B", "a"]  # "B" < "a" in bytes, as COLLATE "C"

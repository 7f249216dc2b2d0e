"""The fusion reranker's score (fusion.py) against the formula written out with dense numpy arrays."""

from __future__ import annotations

import numpy as np

from embedserve import fusion
from embedserve.catalog import FuseSpec
from embedserve.engines.base import SparseVector

VOCAB = 50


def _sparse(dense: np.ndarray) -> SparseVector:
    indices = np.flatnonzero(dense)
    return SparseVector(indices.astype(np.int64), dense[indices].astype(np.float32))


def _random_sparse(rng: np.random.Generator, active: int) -> np.ndarray:
    row = np.zeros(VOCAB, dtype=np.float32)
    row[rng.choice(VOCAB, active, replace=False)] = rng.uniform(0.1, 3.0, active)
    return row


def test_scores_are_cosine_plus_weighted_sparse_dot_over_the_query_norm() -> None:
    rng = np.random.default_rng(0)
    q_dense, d_dense = rng.normal(size=8), rng.normal(size=(6, 8))
    q_sparse = _random_sparse(rng, 7)
    d_sparse = [_random_sparse(rng, n) for n in (0, 1, 5, 10, 20, 50)]
    got = fusion.fused_scores(q_dense, d_dense, _sparse(q_sparse), [_sparse(d) for d in d_sparse], 0.3)

    cosine = d_dense @ q_dense / (np.linalg.norm(d_dense, axis=1) * np.linalg.norm(q_dense))
    expected = cosine + 0.3 * np.stack(d_sparse).astype(np.float64) @ q_sparse / np.linalg.norm(q_sparse)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_a_document_scores_the_same_whatever_else_is_in_the_request() -> None:
    rng = np.random.default_rng(1)
    q_dense, d_dense = rng.normal(size=8), rng.normal(size=(4, 8))
    q_sparse, d_sparse = _sparse(_random_sparse(rng, 5)), [_sparse(_random_sparse(rng, 9)) for _ in range(4)]
    together = fusion.fused_scores(q_dense, d_dense, q_sparse, d_sparse)
    alone = [fusion.fused_scores(q_dense, d_dense[i : i + 1], q_sparse, d_sparse[i : i + 1])[0] for i in range(4)]
    np.testing.assert_array_equal(together, alone)


def test_a_query_without_sparse_weight_scores_by_cosine() -> None:
    q_dense, d_dense = np.array([1.0, 0.0]), np.array([[1.0, 1.0], [0.0, 2.0]])
    empty = SparseVector(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
    got = fusion.fused_scores(q_dense, d_dense, empty, [_sparse(np.ones(VOCAB, dtype=np.float32))] * 2)
    np.testing.assert_allclose(got, [np.sqrt(0.5), 0.0], atol=1e-7)


def test_the_catalogue_default_weight_is_the_module_default() -> None:
    assert FuseSpec(dense="d", sparse="s").sparse_weight == fusion.DEFAULT_SPARSE_WEIGHT

"""The pgvector text forms and the 1,000 non-zero trim, without a database."""

from __future__ import annotations

import numpy as np

from embedserve.evaluation.client import SparseVector
from embedserve.evaluation.store import MAX_SPARSE_NONZEROS, dense_literal, sparse_literal, trim


def test_dense_literal_round_trips_float32_exactly() -> None:
    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    text = dense_literal(vector)
    assert text.startswith("[") and text.endswith("]")
    back = np.asarray([float(x) for x in text[1:-1].split(",")], dtype=np.float32)
    assert np.array_equal(back, vector)


def test_sparse_literal_counts_indices_from_one() -> None:
    vector = SparseVector(np.array([0, 5]), np.array([0.5, 0.25], dtype=np.float32))
    assert sparse_literal(vector, 30522) == "{1:0.5,6:0.25}/30522"
    assert sparse_literal(SparseVector(np.array([], dtype=np.int64), np.array([])), 7) == "{}/7"


def test_trim_keeps_the_largest_weights_in_index_order() -> None:
    n = MAX_SPARSE_NONZEROS + 5
    indices = np.arange(n) * 3
    values = np.random.default_rng(1).random(n).astype(np.float32)
    kept, trimmed = trim(SparseVector(indices, values))
    assert trimmed and len(kept.indices) == MAX_SPARSE_NONZEROS
    assert np.all(np.diff(kept.indices) > 0)
    assert kept.values.min() >= np.sort(values)[5]  # the five smallest went
    short = SparseVector(indices[:10], values[:10])
    assert trim(short) == (short, False)

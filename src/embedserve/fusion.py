"""The score of the ``fusion`` rerank engine: a dense and a sparse model's relevance, added.

A document's score for a query is

    cos(q_dense, d_dense) + w * (q_sparse · d_sparse) / ||q_sparse||

the cosine of the dense model's embeddings plus ``w`` times the sparse (SPLADE) dot product,
divided by the length of the query's sparse vector so that the sparse term does not grow with
the query's own weights (the dot product is the length of the document's sparse vector
projected onto the query's). Each document's score depends on the query and that document
alone, not on the other documents of the request. It is not a cross-encoder: the query and the
documents are embedded separately, by the models the catalogue already serves.

``w`` = 0.1 was chosen for all-MiniLM-L6-v2 with SPLADE-tiny on BEIR SciFact (docs/reranking.md):
both halves of the test queries, tuned separately, picked it for the other half.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embedserve.engines.base import SparseVector

DEFAULT_SPARSE_WEIGHT = 0.1


def sparse_dot(query: SparseVector, document: SparseVector) -> float:
    """The dot product of two sparse vectors (indices ascending and unique in each)."""
    _, qi, di = np.intersect1d(query.indices, document.indices, assume_unique=True, return_indices=True)
    return float(np.dot(query.values[qi].astype(np.float64), document.values[di].astype(np.float64)))


def cosines(query: npt.NDArray[np.generic], docs: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """The cosine of ``query`` with each row of ``docs``."""
    q = np.asarray(query, dtype=np.float64)
    d = np.asarray(docs, dtype=np.float64)
    return np.asarray((d @ q) / np.maximum(np.linalg.norm(d, axis=1) * np.linalg.norm(q), 1e-12))


def fused_scores(
    query_dense: npt.NDArray[np.generic],
    docs_dense: npt.NDArray[np.generic],
    query_sparse: SparseVector,
    docs_sparse: Sequence[SparseVector],
    sparse_weight: float = DEFAULT_SPARSE_WEIGHT,
) -> npt.NDArray[np.float32]:
    """One score per document (see the module docstring); a query with no sparse weight scores
    by the cosine alone."""
    cosine = cosines(query_dense, docs_dense)
    norm = float(np.linalg.norm(query_sparse.values.astype(np.float64)))
    sparse = np.array([sparse_dot(query_sparse, doc) for doc in docs_sparse], dtype=np.float64)
    scores = cosine + (sparse_weight * sparse / norm if norm > 0 else 0.0)
    return np.asarray(scores, dtype=np.float32)


def chunked_scores(
    query_dense: npt.NDArray[np.generic],
    docs_dense: Sequence[npt.NDArray[np.generic]],
    query_sparse: SparseVector,
    docs_sparse: Sequence[Sequence[SparseVector]],
    sparse_weight: float = DEFAULT_SPARSE_WEIGHT,
) -> npt.NDArray[np.float32]:
    """:func:`fused_scores` of documents read in windows: each half of the score is the best of
    the document's windows for that model (the two models' windows differ, as their lengths do)."""
    dense = np.array([cosines(query_dense, np.asarray(rows)).max() for rows in docs_dense])
    norm = float(np.linalg.norm(query_sparse.values.astype(np.float64)))
    sparse = np.array([max(sparse_dot(query_sparse, w) for w in windows) for windows in docs_sparse])
    scores = dense + (sparse_weight * sparse / norm if norm > 0 else 0.0)
    return np.asarray(scores, dtype=np.float32)

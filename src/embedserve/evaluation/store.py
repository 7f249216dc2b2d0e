"""The pgvector side: a schema of its own, COPY bulk load, HNSW indexes, four searches in SQL.

One table, ``<schema>.documents (id, doc_id, body, dense vector(D), sparse sparsevec(V))``, with an
HNSW index on each vector column: cosine for dense, inner product for sparse (a SPLADE score is
a dot product). pgvector indexes at most 1,000 non-zeros per sparsevec row, so longer rows keep
their 1,000 largest weights and are counted as trimmed.

Searches go through the HNSW indexes even where the planner would scan a small table (see
``prepare_search``). Two traps are handled here: ``hnsw.ef_search`` (default 40) caps how many rows an index scan can
return, so it is raised to at least the number of candidates; and documents that share no term
with a query score 0 in the sparse search, so they are filtered out rather than ranked as hits
(with iterative scans on, so that the filter does not starve the index scan).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql
from tqdm import tqdm

from embedserve.evaluation.client import SparseVector

MAX_SPARSE_NONZEROS = 1000
"""pgvector's limit on non-zero elements of a sparsevec in an HNSW index."""

_DENSE_TOP = """SELECT doc_id, dense <=> %(dense)s::vector AS distance FROM {documents}
    ORDER BY dense <=> %(dense)s::vector LIMIT %(n)s"""
_SPARSE_TOP = """SELECT doc_id, sparse <#> %(sparse)s::sparsevec AS distance FROM {documents}
    WHERE sparse <#> %(sparse)s::sparsevec < 0 ORDER BY sparse <#> %(sparse)s::sparsevec LIMIT %(n)s"""
# Ties are broken by doc_id in byte order ("C") everywhere, as metrics.rrf does.
_RANKED = 'SELECT doc_id, distance FROM ({top}) AS top ORDER BY distance, doc_id COLLATE "C"'
_HYBRID = """WITH dense AS (
    SELECT doc_id, row_number() OVER (ORDER BY distance, doc_id COLLATE "C") AS rank FROM ({dense}) AS d
), sparse AS (
    SELECT doc_id, row_number() OVER (ORDER BY distance, doc_id COLLATE "C") AS rank FROM ({sparse}) AS s
)
SELECT doc_id, score FROM (
    SELECT coalesce(dense.doc_id, sparse.doc_id) AS doc_id,
        coalesce(1.0::float8 / (%(k)s + dense.rank), 0.0) + coalesce(1.0::float8 / (%(k)s + sparse.rank), 0.0) AS score
    FROM dense FULL OUTER JOIN sparse ON dense.doc_id = sparse.doc_id
) AS fused ORDER BY score DESC, doc_id COLLATE "C" LIMIT %(n)s"""


def dense_literal(vector: np.ndarray) -> str:
    """pgvector's text form; ``repr`` of each float32 read back as float32 is exact."""
    return "[" + ",".join(map(repr, vector.astype(np.float32).tolist())) + "]"


def sparse_literal(vector: SparseVector, dimension: int) -> str:
    """sparsevec's text form ``{i:v,...}/dimension``; its indices count from 1."""
    pairs = ",".join(f"{i + 1}:{v!r}" for i, v in zip(vector.indices.tolist(), vector.values.tolist(), strict=True))
    return "{" + pairs + "}/" + str(dimension)


def trim(vector: SparseVector, limit: int = MAX_SPARSE_NONZEROS) -> tuple[SparseVector, bool]:
    """The ``limit`` largest weights (indices ascending again), and whether any were dropped."""
    if len(vector.indices) <= limit:
        return vector, False
    keep = np.sort(np.argsort(-vector.values, kind="stable")[:limit])
    return SparseVector(vector.indices[keep], vector.values[keep]), True


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    """Dense: cosine distance; sparse: negative inner product; hybrid: RRF score."""


class Store:
    """The documents of one evaluation in ``schema`` of the database at ``conn``."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], schema: str, ef_search: int = 200) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"schema name {schema!r}: use lower-case letters, digits and _")
        self.conn = conn
        self.schema = schema
        self.documents = sql.Identifier(schema, "documents")
        self.ef_search = ef_search
        self.trimmed = 0

    def _q(self, template: str, **parts: sql.Composable) -> sql.Composed:
        return sql.SQL(template).format(documents=self.documents, **parts)

    def create(self, dense_dimension: int, sparse_dimension: int) -> None:
        """The schema (which must not exist yet) and its table; the vector extension if missing."""
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        self.conn.execute(
            self._q(
                "CREATE TABLE {documents} (id integer PRIMARY KEY, doc_id text NOT NULL UNIQUE, body text NOT NULL, "
                "dense vector({d}) NOT NULL, sparse sparsevec({v}) NOT NULL)",
                d=sql.Literal(dense_dimension),
                v=sql.Literal(sparse_dimension),
            )
        )
        self.dense_dimension, self.sparse_dimension = dense_dimension, sparse_dimension

    def load(
        self,
        doc_ids: Sequence[str],
        bodies: Sequence[str],
        dense: np.ndarray,
        sparse: Sequence[SparseVector],
        progress: bool = True,
    ) -> None:
        """COPY every document in; sparse rows over pgvector's index limit are trimmed and counted."""
        columns = "COPY {documents} (id, doc_id, body, dense, sparse) FROM STDIN"
        with (
            self.conn.cursor() as cur,
            cur.copy(self._q(columns)) as copy,
            tqdm(total=len(doc_ids), desc="load (COPY)", unit="doc", disable=not progress) as bar,
        ):
            for i, doc_id in enumerate(doc_ids):
                kept, trimmed = trim(sparse[i])
                self.trimmed += trimmed
                copy.write_row(
                    (i, doc_id, bodies[i], dense_literal(dense[i]), sparse_literal(kept, self.sparse_dimension))
                )
                bar.update()

    def index(self, progress: bool = True) -> None:
        """HNSW on both vector columns, then ANALYZE."""
        steps = [
            "CREATE INDEX ON {documents} USING hnsw (dense vector_cosine_ops)",
            "CREATE INDEX ON {documents} USING hnsw (sparse sparsevec_ip_ops)",
            "ANALYZE {documents}",
        ]
        self.conn.execute("SET maintenance_work_mem = '512MB'")
        for step in tqdm(steps, desc="index (HNSW)", unit="step", disable=not progress):
            self.conn.execute(self._q(step))

    def prepare_search(self) -> None:
        """Session settings for the searches: enough ef_search, iterative scans for the filter,
        and the HNSW indexes always used. On a corpus of a few thousand rows the planner would
        rather scan the table and sort, which is exact: turning sequential scans off measures
        the approximate index a large corpus gets."""
        self.conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(self.ef_search)))
        self.conn.execute("SET hnsw.iterative_scan = strict_order")
        self.conn.execute("SET enable_seqscan = off")

    def dense(self, query: np.ndarray, n: int = 100) -> list[Hit]:
        """The ``n`` nearest documents by cosine distance, nearest first."""
        statement = self._q(_RANKED.replace("{top}", _DENSE_TOP))
        return self._hits(statement, {"dense": dense_literal(query), "n": n})

    def sparse(self, query: SparseVector, n: int = 100) -> list[Hit]:
        """The ``n`` documents with the largest inner product above 0, largest first."""
        statement = self._q(_RANKED.replace("{top}", _SPARSE_TOP))
        return self._hits(statement, {"sparse": sparse_literal(query, self.sparse_dimension), "n": n})

    def hybrid(self, dense: np.ndarray, sparse: SparseVector, n: int = 100, k: int = 60) -> list[Hit]:
        """Reciprocal rank fusion of the dense and sparse top ``n``, in one SQL statement."""
        statement = self._q(_HYBRID.replace("{dense}", _DENSE_TOP).replace("{sparse}", _SPARSE_TOP))
        params = {"dense": dense_literal(dense), "sparse": sparse_literal(sparse, self.sparse_dimension)}
        return self._hits(statement, {**params, "n": n, "k": k})

    def explain_hybrid(self, dense: np.ndarray, sparse: SparseVector, n: int = 100, k: int = 60) -> str:
        """PostgreSQL's plan for :meth:`hybrid` (it shows both index scans)."""
        statement = self._q("EXPLAIN " + _HYBRID.replace("{dense}", _DENSE_TOP).replace("{sparse}", _SPARSE_TOP))
        params = {"dense": dense_literal(dense), "sparse": sparse_literal(sparse, self.sparse_dimension)}
        return "\n".join(str(row[0]) for row in self.conn.execute(statement, {**params, "n": n, "k": k}))

    def _hits(self, statement: sql.Composed, params: dict[str, object]) -> list[Hit]:
        rows = self.conn.execute(statement, params).fetchall()
        return [Hit(str(doc_id), float(score)) for doc_id, score in rows]  # type: ignore[arg-type]

    def drop(self) -> None:
        self.conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def versions(self) -> str:
        """``<server version> + pgvector <version>``, for the report."""
        row = self.conn.execute(
            "SELECT current_setting('server_version'), extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        return f"{row[0]} + pgvector {row[1]}" if row else "?"

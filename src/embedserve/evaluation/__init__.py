"""``embedserve eval``: retrieval quality through a running server, stored in PostgreSQL + pgvector.

A BEIR dataset's corpus and queries are embedded through the server's HTTP API (so the figures
are what clients get), stored in PostgreSQL with pgvector (``vector`` and ``sparsevec`` columns,
HNSW indexes) and searched four ways: dense, sparse, hybrid (reciprocal rank fusion in SQL) and
hybrid followed by the server's reranker. Needs ``pip install "embedserve[eval]"``.

Modules, in the order a run uses them: ``dataset`` (BEIR files), ``client`` (the server's
HTTP API), ``postgres`` (a throwaway embedded PostgreSQL), ``store`` (schema, COPY, searches),
``metrics`` (nDCG, MRR, recall, RRF), ``runner`` (the whole loop) and ``report`` (table, JSON,
PNG). Nothing here imports torch.
"""

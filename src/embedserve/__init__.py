"""embedserve: dense embeddings, sparse (SPLADE) embeddings and reranking behind one API."""

__version__ = "0.1.0"

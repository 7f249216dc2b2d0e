"""Engines: one module per way of running a model. Only this package imports torch.

``create_engine`` picks the engine a catalogue entry names and imports it on demand, so
importing the API layer never pulls in torch.
"""

from __future__ import annotations

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import DenseEngine, Engine, RerankEngine, SparseEngine, SparseVector

__all__ = ["DenseEngine", "Engine", "RerankEngine", "SparseEngine", "SparseVector", "create_engine"]


def create_engine(entry: CatalogEntry) -> Engine:
    """Load the model of ``entry`` (blocking) and return its engine."""
    from embedserve.engines import sentence_transformers as st

    spec = entry.spec
    if spec.type == "embeddings":
        return st.STDenseEngine(entry)
    if spec.type == "sparse-embeddings":
        return st.STSparseEngine(entry)
    if spec.engine_name == "similarity":
        return st.SimilarityRerankEngine(entry)
    return st.CrossEncoderEngine(entry)

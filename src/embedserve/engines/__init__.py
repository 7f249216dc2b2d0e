"""Engines: one module per way of running a model. Only this package imports torch.

``create_engine`` picks the engine a catalogue entry names and imports it on demand, so
importing the API layer never pulls in torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import DenseEngine, Engine, EngineOptions, RerankEngine, SparseEngine, SparseVector

__all__ = [
    "DenseEngine",
    "Engine",
    "EngineOptions",
    "RerankEngine",
    "SparseEngine",
    "SparseVector",
    "create_engine",
    "passive_omp_threads",
]


def passive_omp_threads() -> None:
    """Make torch's OpenMP threads sleep, not spin, while they wait (unless OMP_WAIT_POLICY is set).

    A server's forward passes share the cores with its own event loop, tokenizer threads and
    whatever else runs on the machine. Spinning threads then wait on each other for whole
    scheduler slices: measured here, one short query took 300-480 ms instead of 15 ms with one
    core busy elsewhere, and 17 ms with passive waiting. Takes effect only before torch loads.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def create_engine(entry: CatalogEntry, options: EngineOptions | None = None) -> Engine:
    """Load the model of ``entry`` (blocking) and return its engine; ``options``: the server's
    settings the engine reads (default: none set)."""
    spec = entry.spec
    options = options or EngineOptions()
    if spec.engine_name == "fake":  # model-free, for tests: no torch
        from embedserve.engines.fake import create_fake_engine

        return create_fake_engine(entry)
    passive_omp_threads()
    from embedserve import families
    from embedserve.engines import sentence_transformers as st

    family = families.detect(entry)
    if family is not None:
        families.check_engine(entry, family)
        if family.key == "static" and spec.type == "embeddings":
            from embedserve.engines.static import StaticDenseEngine

            return StaticDenseEngine(entry, families.local_directory(entry) or Path(entry.source.location))
        if family.key == "inference-free-splade" and spec.type == "sparse-embeddings":
            from embedserve.engines.routed import RoutedSparseEngine

            return RoutedSparseEngine(entry)
    if spec.type == "embeddings":
        return st.STDenseEngine(entry, options)
    if spec.type == "sparse-embeddings":
        return st.STSparseEngine(entry, options)
    if spec.engine_name == "similarity":
        return st.SimilarityRerankEngine(entry, options)
    return st.CrossEncoderEngine(entry, options)

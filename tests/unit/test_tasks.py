from __future__ import annotations

import pytest

from embedserve.catalog import ModelSpec
from embedserve.engines.tokenization import Tokens
from embedserve.errors import EmptyInput, InputTooLong, InvalidInput, LimitExceeded
from embedserve.tasks import Limits, check_texts, used_tokens

SPEC = ModelSpec(name="x/y", type="embeddings", prompts={"query": "q: ", "document": "d: "}, default_prompt="document")


def test_check_texts_limits() -> None:
    limits = Limits(max_inputs=3, max_input_chars=5)
    check_texts(["a", "bcdef"], limits, SPEC, "input")
    with pytest.raises(InvalidInput, match="empty list"):
        check_texts([], limits, SPEC, "input")
    with pytest.raises(InvalidInput, match=r"input\[1\] is an empty string") as err:
        check_texts(["a", ""], limits, SPEC, "input")
    assert err.value.param == "input[1]"
    with pytest.raises(LimitExceeded, match="4 items; the limit is 3"):
        check_texts(["a"] * 4, limits, SPEC, "input")
    with pytest.raises(LimitExceeded, match=r"documents\[0\] has 6 characters; the limit is 5"):
        check_texts(["abcdef"], limits, SPEC, "documents")


def test_model_max_inputs_overrides_server_limit() -> None:
    spec = SPEC.model_copy(update={"max_inputs": 1})
    with pytest.raises(LimitExceeded, match="limit is 1"):
        check_texts(["a", "b"], Limits(), spec, "input")


def _units(*counts: int, max_length: int = 8) -> list[Tokens]:
    return [Tokens([1] * min(n, max_length), [0] * min(n, max_length), n) for n in counts]


def test_used_tokens_truncates_or_refuses() -> None:
    assert used_tokens(_units(3, 10, 7), 8, True, lambda i: f"input[{i}]", "m") == 3 + 8 + 7
    with pytest.raises(InputTooLong, match=r"input\[1\] has 10 tokens; model 'm' reads at most 8") as err:
        used_tokens(_units(3, 10), 8, False, lambda i: f"input[{i}]", "m")
    assert err.value.param == "input[1]"
    with pytest.raises(InputTooLong, match=r"^query has 9 tokens"):
        used_tokens(_units(9), 8, False, lambda i: "query", "m")


def test_empty_inputs_are_their_own_error() -> None:
    with pytest.raises(EmptyInput):
        check_texts([], Limits(), SPEC, "input")
    with pytest.raises(EmptyInput):
        check_texts(["a", ""], Limits(), SPEC, "input")

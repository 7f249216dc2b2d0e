"""The JSON nesting check of the body-limit middleware, on plain bytes."""

from __future__ import annotations

import json
import time

import pytest

from embedserve.api.body_limit import json_depth


@pytest.mark.parametrize(
    "value",
    [
        {"input": ["a", "b"]},
        {"a": {"b": {"c": [[1, 2], [3, {"d": []}]]}}},
        json.loads("[" * 20 + "1" + "]" * 20),
        {"text": 'brackets [[[{{{ and "quotes" \\" inside [strings]'},
        [{"x": [{}] * 3}] * 40,
    ],
)
def test_depth_equals_the_parsed_nesting(value: object) -> None:
    def depth(v: object) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    body = json.dumps(value).encode()
    assert json_depth(body, 0) == depth(value)


def test_few_brackets_are_not_scanned_at_all() -> None:
    assert json_depth(b'{"input": "' + b"x" * 1000 + b'"}', 32) == 0


def test_a_hostile_body_of_megabytes_is_measured_in_milliseconds() -> None:
    wide = b"[" + b"[]," * 3_000_000 + b"[]]"
    deep = b"[" * 5_000_000
    started = time.perf_counter()
    assert json_depth(wide, 32) == 2
    assert json_depth(deep, 32) == 5_000_000
    assert time.perf_counter() - started < 5  # generous on a shared machine; measured ~0.1 s

"""The engines' libraries import, at the pinned versions, beside the stack they must not downgrade
(sentence-transformers' own onnx/openvino extras pull optimum, which would: docs/engines.md)."""

from __future__ import annotations

import importlib
import importlib.metadata
import re

import pytest

from embedserve.engines.runtimes import no_openvino_telemetry

# embedserve's own metadata: 'onnxruntime==1.32.0; extra == "onnx"', ...
PINS = dict(
    match.groups()
    for spec in importlib.metadata.requires("embedserve") or []
    if (match := re.fullmatch(r'([A-Za-z0-9_.-]+)==([^;\s]+) *; *extra == "(?:onnx|openvino)"', spec))
)


@pytest.mark.parametrize("dist", sorted(PINS))
def test_engine_library_imports_at_its_pin(dist: str) -> None:
    assert PINS[dist] == importlib.metadata.version(dist)
    no_openvino_telemetry()  # importing openvino (or nncf) would report usage to Google Analytics
    importlib.import_module({"onnxruntime": "onnxruntime", "openvino": "openvino", "onnx": "onnx"}.get(dist, dist))


def test_the_core_stack_is_not_downgraded() -> None:
    major = {d: int(importlib.metadata.version(d).split(".")[0]) for d in ("sentence-transformers", "transformers")}
    assert major == {"sentence-transformers": 6, "transformers": 5}
    assert "optimum" not in {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert set(PINS) == {"onnxruntime", "onnx", "openvino", "nncf"}

"""The engines' libraries import, at the pinned versions, beside the stack they must not downgrade
(sentence-transformers' own onnx/openvino extras pull optimum, which would: README, "Choosing an engine")."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import tomllib

import pytest
from helpers.server import ROOT

EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
PINS = dict(
    re.fullmatch(r"([A-Za-z0-9_.-]+)==([^;\s]+)", spec).groups()  # type: ignore[union-attr]
    for extra in ("onnx", "openvino")
    for spec in EXTRAS[extra]
    if "==" in spec
)


@pytest.mark.parametrize("dist", sorted(PINS))
def test_engine_library_imports_at_its_pin(dist: str) -> None:
    assert PINS[dist] == importlib.metadata.version(dist)
    importlib.import_module({"onnxruntime": "onnxruntime", "openvino": "openvino", "onnx": "onnx"}.get(dist, dist))


def test_the_core_stack_is_not_downgraded() -> None:
    major = {d: int(importlib.metadata.version(d).split(".")[0]) for d in ("sentence-transformers", "transformers")}
    assert major == {"sentence-transformers": 6, "transformers": 5}
    assert "optimum" not in {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert set(PINS) == {"onnxruntime", "onnx", "openvino", "nncf"}

"""How close the default catalogue's served outputs are to the libraries in-process, by the engine
each model uses (models.yaml ``backend``/``quantize``): fp32 engines (torch, onnx, openvino) agree
to float rounding; int8 is an approximation of them. (The exported engines run each input alone,
so a text gets the same vector whatever it is batched with, int8 included.)"""

from __future__ import annotations

from typing import Any

import yaml

from helpers.server import ROOT

FP32_ATOL = 1e-5
INT8_ATOL = 5e-2  # per component of a unit vector (measured through the server: up to 0.03)


def default_spec(model_id: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "models.yaml").read_text())["models"][model_id]
    return spec


def is_int8(model_id: str) -> bool:
    return default_spec(model_id).get("quantize", "none") == "int8"


def library_atol(model_id: str) -> float:
    """Served against ``encode``: per-component tolerance."""
    return INT8_ATOL if is_int8(model_id) else FP32_ATOL


def min_cosine(model_id: str) -> float:
    """Served against ``encode``: the least cosine of the two vectors."""
    return 0.97 if is_int8(model_id) else 0.9999  # int8: "hi" alone measured 0.983

"""The forward pass of an exported model on ONNX Runtime or OpenVINO (CPU).

A runtime takes the padded ``input_ids`` / ``attention_mask`` / ``token_type_ids`` arrays (those
the export was made with) and returns the model's one output as float32: a sentence embedding,
a SPLADE vocabulary vector or a cross-encoder's logits, as the torch model would.

Threads (the catalogue's ``threads``, else :func:`default_threads`): ONNX Runtime gets that many
intra-op threads, one inter-op thread and sequential execution, and its threads sleep instead of
spinning while they wait (``session.intra_op.allow_spinning=0``): the server's event loop and
tokenizer share the cores, and spinning threads take whole scheduler slices from them (the same
reason the torch engine's OpenMP threads wait passively). OpenVINO gets ``INFERENCE_NUM_THREADS``
of that many, one stream (one batch at a time is all the batcher asks for), the latency hint and
no CPU pinning (pinned threads cannot make way for the server's other threads).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def default_threads() -> int:
    """The cores this process may run on: one forward pass at a time uses them all."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Runtime(Protocol):
    input_names: tuple[str, ...]

    def run(self, arrays: dict[str, npt.NDArray[np.int64]]) -> FloatArray: ...


class OnnxRuntime:
    """An ONNX Runtime CPU session on ``model.onnx``."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.threads = threads

    def run(self, arrays: dict[str, npt.NDArray[np.int64]]) -> FloatArray:
        out = self.session.run(None, {name: arrays[name] for name in self.input_names})[0]
        return np.asarray(out, dtype=np.float32)


class OpenVINORuntime:
    """An OpenVINO CPU compiled model on ``model.xml``, with dynamic batch and sequence axes."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(i.get_any_name() for i in self.compiled.inputs)
        self.threads = threads

    def run(self, arrays: dict[str, npt.NDArray[np.int64]]) -> FloatArray:
        # one request object, one forward pass at a time (the batcher's device lock guarantees it)
        result = self.request.infer({name: arrays[name] for name in self.input_names})
        return np.array(result[self.compiled.outputs[0]], dtype=np.float32)


def load_runtime(backend: str, path: Path, threads: int | None) -> Runtime:
    n = threads or default_threads()
    if backend == "onnx":
        return OnnxRuntime(path, n)
    return OpenVINORuntime(path, n)

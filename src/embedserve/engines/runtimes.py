"""The forward pass of an exported model on ONNX Runtime or OpenVINO (CPU).

A runtime takes the ``input_ids`` / ``attention_mask`` / ``token_type_ids`` arrays (those the
export was made with) and returns the model's one output as float32: a sentence embedding, a
SPLADE vocabulary vector or a cross-encoder's logits, as the torch model would.

**One input per forward pass** (:class:`Lanes`). The exported engines never pad: each input runs
alone, on one of ``streams`` narrow sessions of ``threads / streams`` threads each, or, when
nothing else runs on the device, on a wide session with all ``threads``. Served, each of the
model's batch threads (one per stream, ``Engine.passes``) is a lane: it takes a small pass from
the queue, runs it on a narrow session of its own and hands the outputs back, while the other
lane goes on with the next pass, so no lane waits for another at the end of a batch
(:meth:`Lanes.run_pass`); a lone input, with no other pass on the device, takes the wide
session. In-process, :meth:`Lanes.run_each` spreads one batch over the narrow sessions. Two
reasons for running inputs alone, both measured here (2 cores, all-MiniLM-L6-v2, SciFact queries):

- speed: two one-thread sessions side by side ran 376 queries/s on onnx int8 and 249 on onnx
  fp32, against 273 and 197 for one two-thread session, and 262 and 199 for padded batches at
  their best size (``bench/batching.py --engines-only``);
- the same vector for the same text: ONNX Runtime's dynamic int8 takes the activations' scale
  from the whole forward pass, so in a padded batch a text's vector moved with its batch-mates
  (up to 0.03 a component). Alone, a text always gets the same vector.

Threads (the catalogue's ``threads``, else :func:`default_threads`; ``streams``, else as many as
threads): ONNX Runtime sessions get their share as intra-op threads, one inter-op thread and
sequential execution, and their threads sleep instead of spinning while they wait
(``session.intra_op.allow_spinning=0``): the server's event loop and tokenizer share the cores,
and spinning threads take whole scheduler slices from them (the same reason the torch engine's
OpenMP threads wait passively). OpenVINO compiled models get ``INFERENCE_NUM_THREADS`` of their
share, one stream each, the latency hint and no CPU pinning (pinned threads cannot make way for
the server's other threads). Each session holds its own copy of the weights: ``streams + 1``
copies in all (one when ``streams`` is 1).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from embedserve.thread_cpu import LANE_THREADS

FloatArray = npt.NDArray[np.float32]


def default_threads() -> int:
    """The cores this process may run on."""
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


class _NoTelemetry:
    """openvino_telemetry's ``Telemetry`` interface, doing nothing (as OpenVINO's own stub)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    init = send_event = send_error = start_session = end_session = force_shutdown = send_stack_trace = _nothing


def no_openvino_telemetry() -> None:
    """Call before importing openvino or nncf. Importing ``openvino.tools.ovc`` (which ``import
    openvino`` does), converting a model and compressing it with NNCF each report usage to Google
    Analytics through ``openvino_telemetry``, from a forked process, unless a consent file in the
    user's home says no; no variable turns it off. A server must not send traffic nobody asked
    for (and with no network the forked sender hangs), so its ``Telemetry`` becomes a no-op."""
    try:
        import openvino_telemetry
    except ImportError:
        return
    openvino_telemetry.Telemetry = _NoTelemetry
    wrapper = sys.modules.get("nncf.telemetry.wrapper")  # nncf imported before this: its instance too
    if wrapper is not None and hasattr(wrapper.telemetry, "_impl"):
        wrapper.telemetry._impl = _NoTelemetry()


class OpenVINORuntime:
    """An OpenVINO CPU compiled model on ``model.xml``, with dynamic batch and sequence axes."""

    def __init__(self, path: Path, threads: int, *, fp32: bool = False) -> None:
        no_openvino_telemetry()
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
        }
        if fp32:
            # An fp32 export computes in fp32: without these hints the CPU plugin may run bf16 or
            # f16 where the processor has it, and trade accuracy for speed (dynamic quantization).
            config["INFERENCE_PRECISION_HINT"] = "f32"
            config["EXECUTION_MODE_HINT"] = "ACCURACY"
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(i.get_any_name() for i in self.compiled.inputs)
        self.output = self.compiled.outputs[0]
        self.threads = threads
        # One pass here, on the loading thread, before any lane runs: the first passes of two lanes
        # at once deadlocked inside the bindings (one lane initializing a static that needs the GIL,
        # the other holding the GIL while it waited for that initialization).
        self.run({name: np.full((1, 2), int(name != "token_type_ids"), dtype=np.int64) for name in self.input_names})

    def run(self, arrays: dict[str, npt.NDArray[np.int64]]) -> FloatArray:
        # one request object, one forward pass at a time (each lane is used by one thread at a time)
        result = self.request.infer({name: arrays[name] for name in self.input_names})
        return np.array(result[self.output], dtype=np.float32)


Arrays = dict[str, npt.NDArray[np.int64]]


class Lanes:
    """Runs each input alone, on a narrow session or the wide one (module docstring). A narrow
    session serves one pass at a time: :meth:`run_pass` and :meth:`run_each` take theirs from
    the free ones and give them back when the pass ends."""

    def __init__(self, make: Callable[[int], Runtime], threads: int, streams: int) -> None:
        self.threads = threads
        self.streams = max(1, min(streams, threads))
        self.wide = make(threads)
        self.narrow = [make(max(1, threads // self.streams)) for _ in range(self.streams)] if self.streams > 1 else []
        self.input_names = self.wide.input_names
        self._pool = ThreadPoolExecutor(len(self.narrow), LANE_THREADS) if self.narrow else None
        self._free: queue.SimpleQueue[Runtime] = queue.SimpleQueue()  # narrow sessions no pass holds
        for lane in self.narrow:
            self._free.put(lane)
        self._taking = threading.Lock()

    def run_pass(self, inputs: Sequence[Arrays], passes: int) -> FloatArray:
        """A batch thread's pass, ``passes`` passes running on the device (this one included,
        ``Engine.pass_threads``): alone there, it runs on the wide session; else each input in turn
        on a narrow session this pass holds, so the passes side by side each keep a lane busy and
        none waits for the others (a pass waits for a session only when the catalogue runs more
        passes than there are streams)."""
        if passes <= 1 or not self.narrow:
            return self.run_each(inputs)  # one input (or one stream): the wide session; else spread
        lane = self._free.get()
        try:
            return self._alone(lane, inputs)
        finally:
            self._free.put(lane)

    @staticmethod
    def _alone(session: Runtime, inputs: Sequence[Arrays]) -> FloatArray:
        return np.concatenate([session.run(x) for x in inputs])

    def run_each(self, inputs: Sequence[Arrays]) -> FloatArray:
        """The output rows of ``inputs`` (each a batch of one), in order, stacked."""
        if len(inputs) == 1 or self._pool is None:
            return self._alone(self.wide, inputs)
        # longest first, each lane taking the next input when it is free: the lanes end together
        order = sorted(range(len(inputs)), key=lambda i: -inputs[i]["input_ids"].shape[1])
        rows: list[FloatArray | None] = [None] * len(inputs)
        lock = threading.Lock()

        def work(lane: Runtime) -> None:
            while True:
                with lock:
                    if not order:
                        return
                    i = order.pop(0)
                rows[i] = lane.run(inputs[i])

        # the sessions are this pass's until it ends (a pass on another thread waits for them)
        with self._taking:  # one pass takes several sessions at a time: two never hold some each
            lanes = [self._free.get() for _ in self.narrow[: len(inputs)]]
        try:
            futures = [self._pool.submit(work, lane) for lane in lanes]
            wait(futures)  # every lane stops before the pass ends, even when one of them failed
        finally:
            for lane in lanes:
                self._free.put(lane)
        for future in futures:
            future.result()  # re-raises a lane's error
        return np.concatenate(rows)  # type: ignore[arg-type]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def load_runtime(
    backend: str, path: Path, threads: int | None, streams: int | None = None, *, quantize: str = "none"
) -> Lanes:
    """The lanes of an export; ``quantize``: the export's (``none``: OpenVINO pinned to fp32)."""
    n = threads or default_threads()
    fp32 = quantize == "none"
    make: Callable[[int], Runtime] = (
        (lambda t: OnnxRuntime(path, t)) if backend == "onnx" else (lambda t: OpenVINORuntime(path, t, fp32=fp32))
    )
    return Lanes(make, n, streams or n)

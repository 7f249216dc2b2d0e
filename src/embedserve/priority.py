"""Compute runs below the event loop: the threads that load models and run forward passes get a
lower scheduling priority (a higher nice value) than the server's own threads.

On a busy machine the forward passes can use every core; the event loop, which reads each
request, answers ``/health`` and every early 429 and writes each response, then waits its turn
behind them. With the passes niced (``compute_nice``, default 10) the kernel runs the event loop
first whenever it has work and gives the passes everything it leaves: a saturated server answers
its probes and refusals in milliseconds, and the passes lose nothing while the loop is idle.

Linux only (a thread's nice value is set through its thread id); elsewhere, and at 0, nothing
changes. Raising a thread's nice value needs no privilege. A thread starts at the nice value of
the thread that made it, so the threads an engine starts for itself (ONNX Runtime's and
OpenVINO's pools, torch's OpenMP team) run niced too when they are started from a niced thread:
models load in one (:func:`run_niced`) and each batch thread nices itself (:func:`nice_this_thread`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_NICE = 10
_SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "setpriority")


def thread_nice(native_id: int | None = None) -> int:
    """The nice value of a thread of this process (default: the calling thread); 0 off Linux."""
    if not _SUPPORTED:
        return 0
    return os.getpriority(os.PRIO_PROCESS, native_id if native_id is not None else threading.get_native_id())


def nice_this_thread(increment: int) -> None:
    """Raise the calling thread's nice value by ``increment`` (at most to 19); 0 or off Linux: nothing."""
    if increment <= 0 or not _SUPPORTED:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:  # a sandbox that forbids it: the thread runs at the server's priority
        log.warning("cannot lower the priority of thread %s: %s", threading.current_thread().name, exc)


async def run_niced(increment: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a thread of its own, niced by ``increment``, awaited without blocking the
    loop (with the caller's context, as :func:`asyncio.to_thread`). The threads ``fn`` starts
    keep that nice value."""
    if increment <= 0 or not _SUPPORTED:
        return await asyncio.to_thread(fn, *args)
    executor = ThreadPoolExecutor(1, thread_name_prefix="load", initializer=nice_this_thread, initargs=(increment,))
    try:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(executor, context.run, fn, *args)
    finally:
        executor.shutdown(wait=False)

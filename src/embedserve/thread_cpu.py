"""The server's CPU time by what its threads do, read when ``/metrics`` is scraped (nothing per request).

    event_loop   the thread that runs the app's event loop: HTTP, middleware, routes, the
                 tokenization of short inputs, the responses
    model        the models' batch threads (``batch-<model>-<n>``) and the exported engines' lanes
                 (``embedserve-lane``): the forward passes
    tokenizer    the tokenizer pool's threads (``tokenize-<n>``): the tokenization of long inputs
    other        the rest of the process: the runtimes' own thread pools (torch's OpenMP threads,
                 ONNX Runtime's and OpenVINO's), and any other thread

A Python thread's time is its own CPU clock (``pthread_getcpuclockid``); ``other`` is the
process's CPU time less those. A thread that has ended keeps the time read at the last scrape,
and what it used after that shows under ``other``: every count only goes up. Where threads have
no CPU clock of their own (not Linux, BSD or Solaris), nothing is exported.

When the event loop's count grows by about one second a second, the loop is the server's
bottleneck: requests wait for it, whatever the models' threads could do.
"""

from __future__ import annotations

import threading
import time

ROLES = ("event_loop", "model", "tokenizer", "other")
_THREADS = ROLES[:-1]  # the roles of threads of their own
# The names the threads are given where they are made, each told by its prefix
BATCH_THREADS = "batch-"  # batching.Batcher: batch-<model>-<n>
LANE_THREADS = "embedserve-lane"  # runtimes.Lanes' pool
TOKENIZER_THREADS = "tokenize-"  # tokenizer_pool.TokenizerPool: tokenize-<n>
_PREFIXES = ((BATCH_THREADS, "model"), (LANE_THREADS, "model"), (TOKENIZER_THREADS, "tokenizer"))
AVAILABLE = hasattr(time, "pthread_getcpuclockid")


def role_of(thread: threading.Thread, loop: threading.Thread | None) -> str:
    if thread is loop:
        return "event_loop"
    for prefix, role in _PREFIXES:
        if thread.name.startswith(prefix):
            return role
    return "other"


def _clock(thread: threading.Thread) -> float | None:
    """The thread's CPU seconds, or None once it has ended."""
    ident = thread.ident
    if ident is None or not thread.is_alive():
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except OSError:  # ended since is_alive()
        return None


class ThreadCPU:
    """CPU seconds by role (module docstring); :meth:`read` is called on each scrape."""

    def __init__(self) -> None:
        self.loop: threading.Thread | None = None  # set by the app's lifespan, on the loop's thread
        self._lock = threading.Lock()
        self._last: dict[threading.Thread, tuple[str, float]] = {}  # live threads: role, seconds at the last read
        self._ended = dict.fromkeys(_THREADS, 0.0)  # seconds of threads that have ended, by role
        self._other = 0.0  # the last ``other`` given (never less)

    def read(self) -> dict[str, float]:
        """Seconds of CPU by role since the process started (``other``: the process's remainder)."""
        with self._lock:
            totals = dict(self._ended)
            seen: dict[threading.Thread, tuple[str, float]] = {}
            for thread in threading.enumerate():
                role = role_of(thread, self.loop)
                if role == "other":
                    continue
                seconds = _clock(thread)
                if seconds is None:
                    continue
                seen[thread] = (role, seconds)
                totals[role] += seconds
            for thread, (role, seconds) in self._last.items():
                if thread not in seen:  # ended: keeps what it had at the last read
                    self._ended[role] += seconds
                    totals[role] += seconds
            self._last = seen
            self._other = max(self._other, time.process_time() - sum(totals.values()))
            totals["other"] = self._other
            return totals

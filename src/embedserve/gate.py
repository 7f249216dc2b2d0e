"""How many forward passes run at once on one device, across models.

Every model's batch threads pass through their device's gate. A pass asks for a weight: 1 for
a pass that can share the cores with other passes (torch on the CPU, each pass with its share of
the threads, see ``Engine.pass_threads``; an exported engine's stream, see ``engines.runtimes``),
and the gate's whole capacity for any other pass (an exported engine of one stream; an
accelerator runs one pass at a time). Capacity: the cores on a CPU, 1 on an accelerator.

Why several passes at once on a CPU: a torch forward pass has serial stretches (Python between
the operators, and operators that use one thread) during which the other cores idle. Two passes
of one thread each keep both cores busy: measured here (2 cores, all-MiniLM-L6-v2, passes of
16 SciFact queries in-process), 165-201 queries/s against 129-162 with one two-thread pass, with
1.95 cores busy against 1.72-1.79.

Waiters are served in arrival order, so a whole-device pass is not starved by a stream of small
ones.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator


class DeviceGate:
    """A counting gate with ``capacity`` units, served first come, first served."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self.used = 0
        self.passes = 0  # passes inside now
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()

    def acquire(self, weight: int) -> int:
        """Wait for ``weight`` units (at most the capacity); return the passes inside, this one included."""
        weight = min(max(1, weight), self.capacity)
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            while self._waiting[0] is not ticket or self.used + weight > self.capacity:
                self._cond.wait()
            self._waiting.popleft()
            self.used += weight
            self.passes += 1
            self._cond.notify_all()  # the next in line may fit too
            return self.passes

    def try_acquire(self, weight: int) -> int | None:
        """:meth:`acquire` when the units are free now and nobody waits for them; else None, at once."""
        weight = min(max(1, weight), self.capacity)
        with self._cond:
            if self._waiting or self.used + weight > self.capacity:
                return None
            self.used += weight
            self.passes += 1
            return self.passes

    def release(self, weight: int) -> None:
        weight = min(max(1, weight), self.capacity)
        with self._cond:
            self.used -= weight
            self.passes -= 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def entered(self, weight: int) -> Iterator[int]:
        """``with gate.entered(w) as passes:`` the pass runs inside; ``passes`` as from :meth:`acquire`."""
        passes = self.acquire(weight)
        try:
            yield passes
        finally:
            self.release(weight)

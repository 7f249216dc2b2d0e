"""The threads that tokenize, shared by every model: fair, bounded, and within each request's deadline.

A request's tokenization is one or more jobs (:meth:`ModelHandle.tokenize_texts` cuts a long
list of texts into jobs of about ``CHUNK_CHARS`` characters, run one after another). Waiting jobs
are taken in order of the time each would finish if it ran alone from when it was queued
(``queued + characters / RATE``), so a short request queued behind a long one's job goes first,
and a long one still goes once nothing shorter has come for a while: no request holds the
tokenizer for everyone, and none waits forever.

A short job (at most ``inline_chars`` characters: a query, a sentence) runs at once on the
event loop instead: tokenizing it takes less than handing it to a thread and back (two thread
wake-ups and a turn of the loop), and it waits behind nobody.

Bounded: the characters of the requests admitted and not yet tokenized are capped; past the cap a
request is refused at once with :class:`Overloaded` (429), as a full model queue is. A job whose
request's deadline passes while it waits is dropped and the request answered with
:class:`DeadlineExceeded` (503) at its deadline; one whose request was cancelled (client gone,
shutdown) is dropped too. The threads are daemons: a job still running never holds up the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from embedserve.errors import DeadlineExceeded, Overloaded
from embedserve.thread_cpu import TOKENIZER_THREADS

log = logging.getLogger(__name__)
T = TypeVar("T")
RATE = 1_000_000  # characters a second a tokenizer thread gets through, about: only orders the jobs
# Jobs up to this many characters run on the event loop (the registry's pool): measured here
# (all-MiniLM-L6-v2's tokenizer), one text costs ~60 us plus ~1 us a character, and a hand-off to a
# tokenizer thread and back ~200 us of CPU, so a text of 256 characters (a query, a sentence)
# blocks the loop for less than the hand-off would cost.
INLINE_CHARS = 256
CHUNK_CHARS = 64 * 1024  # characters of one job of a long request: the longest a short request waits for its turn


@dataclass(order=True)
class _Job:
    priority: float
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    dropped: bool = field(default=False, compare=False)  # its request gave up: skip it if not started


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the event loop: a job's outcome into its future, unless the request has given up."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _time_out(future: asyncio.Future[Any], model_id: str) -> None:
    if not future.done():
        future.set_exception(_expired(model_id))


class TokenizerPool:
    """``threads`` daemon threads; at most ``max_pending_chars`` characters admitted at a time;
    jobs of at most ``inline_chars`` characters run on the caller's event loop.

    Per job, the event loop pushes it onto a heap and puts a token on a ``SimpleQueue``, on which
    an idle thread waits (in C, without the GIL); the thread hands the result back with one
    ``call_soon_threadsafe``: no ``concurrent.futures`` future, no ``wait_for`` task, no Python-level
    condition variable on a path that every request takes."""

    def __init__(self, threads: int = 1, max_pending_chars: int = 64 * 1024 * 1024, inline_chars: int = 0) -> None:
        self.max_pending_chars = max_pending_chars
        self.inline_chars = inline_chars
        self.pending_chars = 0
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # one token per job pushed, or per thread at close
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{TOKENIZER_THREADS}{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @contextlib.contextmanager
    def admit(self, chars: int, model_id: str) -> Iterator[None]:
        """Count a request's characters as pending for the block; :class:`Overloaded` past the cap
        (a request alone is always admitted: the request limits bound it)."""
        with self._lock:
            if self.pending_chars and self.pending_chars + chars > self.max_pending_chars:
                raise Overloaded(
                    f"the tokenizer is busy ({self.pending_chars} characters waiting; model '{model_id}'); "
                    "retry shortly (EMBEDSERVE_TOKENIZER_QUEUE_CHARS)"
                )
            self.pending_chars += chars
        try:
            yield
        finally:
            with self._lock:
                self.pending_chars -= chars

    async def run(self, fn: Callable[[], T], chars: int, deadline: float | None, model_id: str) -> T:
        """``fn``'s result, computed on a tokenizer thread when its turn comes; within ``deadline``
        (``time.monotonic()``), else :class:`DeadlineExceeded`."""
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise _expired(model_id)
        if chars <= self.inline_chars:
            return fn()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(now + chars / RATE, next(self._seq), fn, loop, future)
        with self._lock:
            if self._closed:
                raise RuntimeError("the tokenizer pool is closed")
            heapq.heappush(self._heap, job)
        self._wake.put(None)
        timer = None if deadline is None else loop.call_later(deadline - now, _time_out, future, model_id)
        try:
            return await future
        finally:
            job.dropped = True  # a job not yet started is skipped (no-op once done)
            if timer is not None:
                timer.cancel()

    def _work(self) -> None:
        while True:
            self._wake.get()
            with self._lock:
                if self._closed:
                    return
                job = heapq.heappop(self._heap)
            if job.dropped:
                continue  # its request gave up (deadline, client gone, shutdown)
            result, error = None, None
            try:
                result = job.fn()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)

    def close(self) -> None:
        """Cancel the waiting jobs and let the threads end (without waiting for a running job)."""
        with self._lock:
            self._closed = True
            for job in self._heap:
                job.dropped = True
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(job.future.cancel)
            self._heap.clear()
        for _ in self._threads:
            self._wake.put(None)


def _expired(model_id: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the request's deadline passed while it waited to be tokenized for model '{model_id}' "
        "(EMBEDSERVE_REQUEST_TIMEOUT)"
    )


def chunks(texts: list[str], chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
    """``texts`` in consecutive runs of about ``chars`` characters (at least one text each)."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > chars:
            yield texts[start:i]
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        yield texts[start:]

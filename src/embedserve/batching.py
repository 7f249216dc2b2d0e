"""Dynamic batching: one queue per model, and its batch threads that run the forward passes.

Requests put their units (texts, or query-document pairs, already tokenized) into the
model's queue and wait on a future. A batch thread takes the units
:func:`~embedserve.batch_policy.select_batch` chooses (the oldest, and the waiting units of its
group closest to it in length, within ``max_batch_size`` and ``max_batch_tokens``), runs one
forward pass and hands every unit's output back to its request. So many small requests merge
into one pass, one large request is split across several, and each pass pads little. This
module is the runner: threads, waiting, deadlines, cancellation, the device gate, metrics.

Waiting: when requests are still being tokenized for this model and the queue holds less
than a full batch, the thread waits up to ``max_wait_ms`` for them; a lone request never
waits. A batch that raises fails every request in it (domain errors as they are, anything
else as ``InferenceFailed``, logged here) and the thread goes on with the next batch. The
queue is bounded: past ``max_queue`` units, :class:`Overloaded` (429). A request that is
cancelled (its client went away) has its queued units dropped before they are computed, and so
has a request whose deadline passes first: a timer on the event loop answers it with
:class:`DeadlineExceeded` (503) at its deadline, even while the thread is busy, and takes its
units off the queue's count at once, so they neither run nor hold room other requests need.
After a second with nothing queued, the thread returns the passes' freed memory to the OS
(:mod:`embedserve.memory`), so RSS follows the load down.

Admission (:mod:`embedserve.admission`): before a request is tokenized, :meth:`Batcher.incoming`
weighs its characters and the work ahead of it (tokens queued and in passes, characters being
tokenized) against the model's measured throughput, and refuses with :class:`Overloaded` (429,
``Retry-After`` from the estimate, spread by ``admission.spread``) a request that could not be
computed before its deadline, so those admitted are not answered 503 at it.

Each pass is reported to ``observer`` (inputs, tokens, seconds) from the batch thread, and each
request's share of the time (queue, inference) to its :class:`RequestContext`.

A lone short input runs where it is submitted (``alone``, given by the server): when the server
has no other request in progress (``alone()``), the model nothing queued, no pass running and
no request being tokenized, the device's gate is free, and the model's recent lone passes say
this one takes at most ``INLINE_SECONDS``, the event loop runs the pass itself instead of waking
a batch thread and being woken back: two thread hand-offs that cost a request served one at a
time about half a millisecond here (2 cores, all-MiniLM-L6-v2 on onnx int8: 9.9 against 9.4 ms a
query through the app; torch, see ``INLINE_SECONDS``). The loop is blocked for that pass, which
is why it must be short and the request alone in the server: with other requests read and
waiting, they would wait for it, and the batch threads would idle.

Passes side by side: a model has ``passes`` batch threads (``batching.passes``, by default the
engine's: 2 for torch on a CPU, else 1), each taking its own batches from the one queue. Every
pass goes through its device's :class:`~embedserve.gate.DeviceGate`, shared by the models on
that device, with the weight the engine asks for: a torch pass on a CPU takes one unit and its
share of the threads (``prepare``), any other pass the whole device, so passes never fight
over more cores than there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from embedserve.admission import WaitEstimator, retry_after_headers, spread
from embedserve.batch_policy import select_batch, window_size
from embedserve.catalog import BatchingSpec
from embedserve.context import RequestContext
from embedserve.engines.base import Engine
from embedserve.engines.tokenization import Tokens
from embedserve.errors import (
    DeadlineExceeded,
    EmbedServeError,
    InferenceFailed,
    LimitExceeded,
    ModelUnavailable,
    Overloaded,
)
from embedserve.gate import DeviceGate
from embedserve.memory import release_freed_memory
from embedserve.priority import nice_this_thread
from embedserve.thread_cpu import BATCH_THREADS

log = logging.getLogger(__name__)
Forward = Callable[[Sequence[Tokens]], Any]  # one output per unit: an array's rows, or a list
Observer = Callable[[int, int, float], None]  # after each pass: inputs, tokens, seconds


# After this long with nothing queued, the thread gives the passes' freed memory back to the OS.
_IDLE_SECONDS = 1.0
# A lone input expected to take at most this long runs on the event loop (module docstring).
# A lone query on torch takes 13-25 ms on two cores, so it runs inline too: measured here
# (all-MiniLM-L6-v2, one query at a time), served p50 minus the in-process encode's went from
# 2.4 ms through a batch thread to 1.5-2.0 ms inline. /health waits at most one such pass, and only
# while no other request is in progress.
INLINE_SECONDS = 0.03
_LONE_ALPHA = 0.2  # weight of the newest lone pass in its averages


_SPEC = BatchingSpec.model_fields  # the catalogue's defaults are the ones below


@dataclass(frozen=True)
class BatchLimits:
    """Per-model batching limits (models.yaml: ``batching:``); the registry fills in the engine's
    own where the catalogue sets none (:class:`~embedserve.engines.base.Engine`), so these
    defaults serve tests and direct use."""

    max_batch_size: int = Engine.max_batch_size
    max_batch_tokens: int = Engine.max_batch_tokens
    max_wait_ms: float = _SPEC["max_wait_ms"].default
    max_queue: int = _SPEC["max_queue"].default
    passes: int = 1


class _Request:
    """One request's units in flight: its outputs, filled in by the batch thread."""

    __slots__ = ("cancelled", "done", "future", "inference", "loop", "outputs", "queued", "queued_tokens", "remaining")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[list[Any]] = loop.create_future()
        self.outputs: list[Any] = [None] * size
        self.remaining = size
        self.queued = size  # units still in the queue and counted in it (under the batcher's lock)
        self.queued_tokens = 0  # their tokens
        self.inference = 0.0  # seconds of the passes that computed its units
        self.cancelled = False  # set by the event loop when the waiting request is cancelled or expires
        self.done = False

    @property
    def live(self) -> bool:
        return not (self.done or self.cancelled)


def _finish_all(requests: Sequence[_Request], error: BaseException | None = None) -> None:
    """Resolve the requests' futures from a thread: one ``call_soon_threadsafe`` per event loop (a
    pass finishes many requests; each call wakes the loop through its self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
    for request in requests:
        request.done = True
        by_loop.setdefault(request.loop, []).append(request)
    for loop, finished in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, [(r.future, r.outputs) for r in finished], error)


def _resolve(futures: list[tuple[asyncio.Future[list[Any]], list[Any]]], error: BaseException | None) -> None:
    for future, outputs in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(outputs)
        else:
            future.set_exception(error)


@dataclass(slots=True)
class _Unit:
    request: _Request
    index: int
    tokens: Tokens


class Batcher:
    """The queue and batch thread of one model."""

    def __init__(
        self,
        model_id: str,
        forward: Forward,
        limits: BatchLimits,
        gate: DeviceGate | None = None,
        observer: Observer | None = None,
        *,
        weight: int | None = None,
        prepare: Callable[[int], None] | None = None,
        padded: bool = True,
        nice: int = 0,
        alone: Callable[[], bool] | None = None,
    ) -> None:
        """``gate``: the device's (default: a gate of its own, one pass at a time); ``weight``: the
        gate units a pass takes (default: all); ``prepare``: called before each pass with the
        passes running on the device; ``padded``: the engine pads a pass to its longest unit
        (``Engine.is_padded``). ``limits.passes`` batch threads take batches, each niced by
        ``nice`` (priority.py); ``alone``: whether the server has no request in progress but the
        one asking, which may then run a lone short input on its event loop (module docstring)."""
        self.model_id = model_id
        self._nice = nice
        self._alone = alone
        self._lone: tuple[float, float] | None = None  # the recent lone passes: seconds and tokens (averages)
        self.limits = limits
        self.padded = padded
        self._forward = forward
        self._observer = observer
        self._gate = gate or DeviceGate(1)
        self._weight = self._gate.capacity if weight is None else weight
        self._prepare = prepare
        self._queue: deque[_Unit] = deque()
        self._queued = 0  # live units in the queue (the deque may still hold dropped ones)
        self._queued_tokens = 0  # their tokens
        self._running_tokens = 0  # tokens in forward passes now
        self._incoming = 0  # requests being tokenized for this model
        # their characters and expected model work (admission.WaitEstimator.tokens_for)
        self._incoming_work: dict[object, tuple[int, float]] = {}
        self.estimator = WaitEstimator()
        self._cond = threading.Condition()
        self._closed = False
        self._dirty = False  # passes have run since memory was last released
        self.batches = 0
        self.inputs_computed = 0
        self.running = 0  # units in forward passes now
        self._in_pass = 0  # batch threads holding a batch now
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"{BATCH_THREADS}{model_id}-{i}", daemon=True)
            for i in range(limits.passes)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queue_depth(self) -> int:
        return self._queued

    def stats(self) -> dict[str, int]:
        return {"queue_depth": self._queued, "batches": self.batches, "inputs_computed": self.inputs_computed}

    @contextlib.contextmanager
    def incoming(
        self, chars: int = 0, deadline: float | None = None, *, texts: int = 1, cap: int | None = None
    ) -> Iterator[None]:
        """Admit a request of ``chars`` characters in ``texts`` texts that will submit soon (it is
        being tokenized; ``cap``: the tokens the model reads of one text, when it truncates):
        :class:`Overloaded` when it could not be computed before ``deadline`` (``time.monotonic()``;
        see :mod:`embedserve.admission`), else counted as incoming, so a short queue waits for it."""
        ticket = object()
        with self._cond:
            own = self.estimator.tokens_for(chars, texts, cap)
            refused = self.refusal(deadline, chars, own)
            if refused is not None:
                raise refused
            self._incoming += 1
            self._incoming_work[ticket] = (chars, own)
        try:
            yield
        finally:
            with self._cond:
                self._incoming -= 1
                del self._incoming_work[ticket]
                self._cond.notify()

    def refusal(self, deadline: float | None, chars: int = 0, own: float = 0.0) -> Overloaded | None:
        """The :class:`Overloaded` a request of ``chars`` characters (``own`` tokens of model work,
        ``admission.WaitEstimator.tokens_for``) is refused with now, or None to admit it: the verdict
        of :meth:`incoming`, which the API also asks before routing (``api/shed``)."""
        with self._cond:
            # Of the requests still being tokenized, those no longer than this one come before it:
            # the tokenizer pool runs the shortest jobs first (tokenizer_pool), so a short request
            # reaches the queue ahead of a long one that arrived before it.
            tokenizing = sum(work for size, work in self._incoming_work.values() if size <= chars)
            ahead = self._queued_tokens + self._running_tokens + tokenizing
            seconds_left = None if deadline is None else deadline - time.monotonic()
            retry_after = self.estimator.verdict(ahead, own, seconds_left)
        if retry_after is None:
            return None
        wait = spread(retry_after)
        return Overloaded(
            f"model '{self.model_id}' is busy: the work queued before this request would not be done "
            f"before its deadline (EMBEDSERVE_REQUEST_TIMEOUT); retry in {retry_after_headers(wait)[0]} s",
            retry_after=wait,
        )

    def _retry_after(self, tokens: int) -> float:
        """Seconds until ``tokens`` more would fit after the work queued now (1 before any measurement), spread."""
        wait = self.estimator.wait(self._queued_tokens + self._running_tokens, tokens)
        return spread(1 if wait is None else max(1, int(wait) + 1))  # spread caps it at MAX_RETRY_AFTER

    async def submit(self, units: Sequence[Tokens], ctx: RequestContext | None = None) -> list[Any]:
        """Queue ``units`` and wait for their outputs, in the same order. With ``ctx``, its deadline
        bounds the wait (503 after it) and its timings get this request's queue and inference time."""
        if not units:
            return []
        if len(units) > self.limits.max_queue:
            raise LimitExceeded(
                f"this request needs {len(units)} model inputs; model '{self.model_id}' queues at most "
                f"{self.limits.max_queue}",
                param="input",
            )
        deadline = ctx.deadline if ctx is not None else None
        if deadline is not None and deadline <= time.monotonic():
            raise self._expired()
        tokens = sum(u.cost for u in units)
        if self._alone is not None and len(units) == 1:
            passes = self._alone_now(tokens)
            if passes is not None:
                return self._run_alone(units, tokens, passes, ctx)
        loop = asyncio.get_running_loop()
        request = _Request(loop, len(units))
        order = sorted(range(len(units)), key=lambda i: units[i].cost)  # similar lengths share a pass
        request.queued_tokens = tokens
        with self._cond:
            if self._closed:
                raise ModelUnavailable(f"model '{self.model_id}' is unloaded", param="model")
            if self._queued + len(units) > self.limits.max_queue:
                raise Overloaded(
                    f"model '{self.model_id}' is busy: {self._queued} inputs are queued (the limit is "
                    f"{self.limits.max_queue}); retry shortly",
                    retry_after=self._retry_after(tokens),
                )
            if len(self._queue) > 2 * self.limits.max_queue:  # many dropped units still held: let them go
                self._queue = deque(u for u in self._queue if u.request.live)
            self._queue.extend(_Unit(request, i, units[i]) for i in order)
            self._queued += len(units)
            self._queued_tokens += tokens
            self._cond.notify()
        started = time.perf_counter()
        timer = None if deadline is None else loop.call_later(deadline - time.monotonic(), self._expire, request)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request)  # the batch thread skips its units still queued
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if ctx is not None:
                ctx.inference += request.inference
                ctx.queue += max(0.0, time.perf_counter() - started - request.inference)
                ctx.tokens += tokens

    def _expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request's deadline passed while it waited for model '{self.model_id}' (EMBEDSERVE_REQUEST_TIMEOUT); "
            "retry, or send fewer inputs"
        )

    def _expire(self, request: _Request) -> None:
        """On the event loop, at the request's deadline: drop its queued units and answer it with 503."""
        if request.done or request.future.done():
            return
        self._drop(request)
        request.done = True
        request.future.set_exception(self._expired())

    def _drop(self, request: _Request) -> None:
        """Mark the request dead and take its queued units off the count (they stay in the deque
        until the batch thread meets them, which skips them)."""
        with self._cond:
            request.cancelled = True
            self._queued -= request.queued
            self._queued_tokens -= request.queued_tokens
            request.queued = request.queued_tokens = 0

    def _take(self) -> list[_Unit]:
        """The next batch, under the lock, as :func:`~embedserve.batch_policy.select_batch` chooses
        it from the live units at the front of the queue."""
        while self._queue and not self._queue[0].request.live:
            self._queue.popleft()  # dropped: already off the count
        size = window_size(self.limits.max_batch_size)
        waiting = list(itertools.islice((u for u in self._queue if u.request.live), size))
        chosen = select_batch(
            [u.tokens for u in waiting], self.limits.max_batch_size, self.limits.max_batch_tokens, padded=self.padded
        )
        batch = [waiting[i] for i in chosen]
        if len(batch) == 1:
            self._queue.popleft()  # the head (live, so the first in the deque)
        for unit in batch:
            unit.request.queued -= 1
            unit.request.queued_tokens -= unit.tokens.cost
            self._queued_tokens -= unit.tokens.cost
        self._queued -= len(batch)
        if len(batch) > 1:
            taken = {id(u) for u in batch}
            self._queue = deque(u for u in self._queue if id(u) not in taken and u.request.live)
        return batch

    def _wait_for_batch(self, index: int) -> list[_Unit]:
        """The next batch for batch thread ``index``, which takes work only while threads 0 to
        ``index - 1`` are all in a pass: a lone request always goes to thread 0, whose torch
        threads are awake, and a second pass starts only when there is more work than one."""
        limits = self.limits
        with self._cond:
            while not self._closed and (not self._queue or self._in_pass < index):
                if not self._cond.wait(_IDLE_SECONDS if self._dirty else None):
                    return []  # a quiet spell after work: _loop releases memory
            if limits.max_wait_ms > 0:
                deadline = time.monotonic() + limits.max_wait_ms / 1000
                while (
                    not self._closed
                    and self._incoming > 0
                    and self._queued < limits.max_batch_size
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(left)
            batch = [] if self._closed else self._take()
            if batch:
                self._in_pass += 1
                self._cond.notify_all()  # the next batch thread may take what is left
            return batch

    def _loop(self, index: int = 0) -> None:
        nice_this_thread(self._nice)
        while not self._closed:
            batch = self._wait_for_batch(index)
            if batch:
                self._run(batch)  # its pass ends the batch's count in _in_pass
                self._dirty = True
            elif self._dirty and not self._closed:
                self._dirty = False
                release_freed_memory()

    def _running(self, units: int, tokens: int, ended: bool = False) -> None:
        with self._cond:
            self.running += units
            self._running_tokens += tokens
            if ended:  # the batch taken in _wait_for_batch is done with: before its requests hear of it
                self._in_pass -= 1

    def _pass(self, batch: list[_Unit], tokens: int) -> tuple[Any, float]:
        """One forward pass inside the device's gate: the outputs and the seconds it took."""
        self._running(len(batch), tokens)
        try:
            with self._gate.entered(self._weight) as passes:
                return self._timed([u.tokens for u in batch], tokens, passes)
        finally:
            self._running(-len(batch), -tokens, ended=True)

    def _timed(self, inputs: list[Tokens], tokens: int, passes: int) -> tuple[Any, float]:
        """The forward pass of ``inputs`` (inside the gate, ``passes`` running on the device), measured."""
        if self._prepare is not None:
            self._prepare(passes)
        side_by_side = self._in_pass  # this model's passes running now, this one included
        started = time.perf_counter()
        outputs = self._forward(inputs)
        seconds = time.perf_counter() - started
        self.estimator.observe_pass(tokens, seconds, side_by_side)
        if len(inputs) == 1 and passes <= 1 and tokens > 0:  # alone on the device, as an inline pass would be
            last = self._lone
            if last is None:
                self._lone = (seconds, float(tokens))
            else:
                self._lone = (last[0] + _LONE_ALPHA * (seconds - last[0]), last[1] + _LONE_ALPHA * (tokens - last[1]))
        if len(outputs) != len(inputs):
            raise RuntimeError(f"forward gave {len(outputs)} outputs for {len(inputs)} inputs. This is a bug.")
        return outputs, seconds

    def _alone_now(self, tokens: int) -> int | None:
        """The gate's passes, this one included, when a lone input of ``tokens`` may run on the
        calling thread now (module docstring), the gate then held and the pass counted; else None."""
        lone = self._lone
        # a pass costs at least what the lone passes cost on average, longer inputs more
        if lone is None or lone[0] * max(1.0, tokens / lone[1]) > INLINE_SECONDS:
            return None
        assert self._alone is not None
        if not self._alone():
            return None
        with self._cond:
            if self._closed or self._queued or self._in_pass or self._incoming:
                return None
            passes = self._gate.try_acquire(self._weight)  # never waits: the loop must not block on it
            if passes is not None:
                self._in_pass += 1
                self.running += 1
                self._running_tokens += tokens
            return passes

    def _run_alone(self, units: Sequence[Tokens], tokens: int, passes: int, ctx: RequestContext | None) -> list[Any]:
        """The pass :meth:`_alone_now` allowed, on this thread; its outcome as :meth:`_run` gives it."""
        try:
            outputs, seconds = self._timed(list(units), tokens, passes)
        except EmbedServeError:
            raise
        except Exception as exc:
            raise self._failed(1) from exc
        finally:
            self._gate.release(self._weight)
            self._running(-1, -tokens, ended=True)
            with self._cond:
                if not self._dirty:  # the batch thread gives the memory back after a quiet second
                    self._dirty = True
                    self._cond.notify()
        if self._observer is not None:
            self._observer(1, tokens, seconds)
        with self._cond:
            self.batches += 1
            self.inputs_computed += 1
        if ctx is not None:
            ctx.inference += seconds
            ctx.tokens += tokens
        return [outputs[0]]

    def _run(self, batch: list[_Unit]) -> None:
        requests = {id(u.request): u.request for u in batch}.values()
        tokens = sum(u.tokens.cost for u in batch)
        try:
            outputs, seconds = self._pass(batch, tokens)
        except EmbedServeError as exc:
            self._fail(requests, exc)
            return
        except Exception:
            self._fail(requests, self._failed(len(batch)))
            return
        if self._observer is not None:
            self._observer(len(batch), tokens, seconds)
        finished = []
        with self._cond:  # a request split over passes on two batch threads meets itself here
            self.batches += 1
            self.inputs_computed += len(batch)
            for request in requests:
                request.inference += seconds
            for unit, output in zip(batch, outputs, strict=True):
                request = unit.request
                if not request.live:
                    continue  # failed or cancelled meanwhile
                request.outputs[unit.index] = output
                request.remaining -= 1
                if request.remaining == 0:
                    request.done = True  # before the lock is let go: the other batch thread must not finish it too
                    finished.append(request)
        _finish_all(finished)

    def _failed(self, inputs: int) -> InferenceFailed:
        """The error for a pass of ``inputs`` that raised unexpectedly (logged here, with its traceback:
        the client hears only that it failed)."""
        log.exception("model %s: a batch of %d inputs failed", self.model_id, inputs)
        return InferenceFailed(f"model '{self.model_id}' failed to compute this request")

    def _fail(self, requests: Iterable[_Request], error: EmbedServeError) -> None:
        with self._cond:
            failed = [request for request in requests if not request.done]
            for request in failed:
                self._drop(request)  # its other units, still queued, will not run
            _finish_all(failed, error)

    def close(self, wait: float = 30.0) -> None:
        """Stop the threads after their current batch and wait for them (up to ``wait`` seconds), so
        no pass is running when the engine frees its weights; every queued request fails with 503."""
        with self._cond:
            self._closed = True
            pending = {id(u.request): u.request for u in self._queue}.values()
            for request in pending:
                request.queued = request.queued_tokens = 0
            self._queue.clear()
            self._queued = self._queued_tokens = 0
            self._cond.notify_all()
        self._fail(pending, ModelUnavailable(f"model '{self.model_id}' was unloaded", param="model"))
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(wait)

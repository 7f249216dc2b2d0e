"""The batcher with a fake forward pass: merging, splitting, limits, errors, queue bound, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from embedserve.batching import Batcher, BatchLimits
from embedserve.context import RequestContext
from embedserve.engines.tokenization import Tokens
from embedserve.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    LimitExceeded,
    ModelUnavailable,
    Overloaded,
)
from embedserve.gate import DeviceGate
from embedserve.memory import release_freed_memory
from embedserve.priority import thread_nice

pytestmark = pytest.mark.anyio


def units(*lengths: int, group: int = 0, tag: int = 0) -> list[Tokens]:
    """Units whose ids encode (tag, position), so outputs can be traced back to their request."""
    return [Tokens([tag, i] + [0] * (n - 2), [0] * n, n, group) for i, n in enumerate(lengths)]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` on the event loop (the batch thread moves meanwhile) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the batcher"
        await asyncio.sleep(0.001)


def in_pass(batcher: Batcher) -> Callable[[], bool]:
    """A batch thread has taken a batch and is in its forward pass (the held one)."""
    return lambda: batcher.running > 0


def queued(batcher: Batcher, depth: int) -> Callable[[], bool]:
    return lambda: batcher.queue_depth == depth


class Recorder:
    """A forward pass that records each batch and returns (tag, position) per unit."""

    def __init__(self, fail_on_tag: int | None = None, error: Exception | None = None) -> None:
        self.batches: list[list[Tokens]] = []
        self.fail_on_tag = fail_on_tag
        self.error = error or RuntimeError("secret internals")
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Sequence[Tokens]) -> list[tuple[int, int]]:
        self.gate.wait(5)
        self.batches.append(list(batch))
        if any(u.ids[0] == self.fail_on_tag for u in batch):
            raise self.error
        return [(u.ids[0], u.ids[1]) for u in batch]


async def test_many_small_requests_merge_and_each_gets_its_own_outputs_in_order() -> None:
    forward = Recorder()
    forward.gate.clear()  # hold the first pass so the others queue up behind it
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=64, max_wait_ms=0))
    first = asyncio.ensure_future(batcher.submit(units(4, tag=99)))
    await until(in_pass(batcher))
    others = [asyncio.ensure_future(batcher.submit(units(5, 3, 7, tag=t))) for t in range(20)]
    await until(queued(batcher, 60))
    forward.gate.set()
    assert await first == [(99, 0)]
    results = await asyncio.gather(*others)
    batcher.close()
    for tag, result in enumerate(results):
        assert result == [(tag, 0), (tag, 1), (tag, 2)]
    # the held pass; then the 3s and 5s (past 60% of the queue, only units that add no padding);
    # then the 7s, which would have widened the second pass
    assert [sorted({u.cost for u in b}) for b in forward.batches] == [[4], [3, 5], [7]]
    assert [len(b) for b in forward.batches] == [1, 40, 20]


async def test_a_long_queue_leaves_units_for_the_next_pass_to_group_by_length() -> None:
    forward = Recorder()
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=64, max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(4, tag=99)))
    await until(in_pass(batcher))
    lengths = [10 + 3 * i for i in range(20)]  # 20 distinct lengths: every unit past the first widens
    waiting = [asyncio.ensure_future(batcher.submit(units(n, tag=i))) for i, n in enumerate(lengths)]
    await until(queued(batcher, 20))
    forward.gate.set()
    await held
    assert [r[0][0] for r in await asyncio.gather(*waiting)] == list(range(20))
    batcher.close()
    # 12 (60% of 20) shortest with the oldest, then the 8 longest: each pass spans fewer lengths
    assert [sorted(u.cost for u in b) for b in forward.batches[1:]] == [lengths[:12], lengths[12:]]


async def test_a_short_queue_goes_in_one_pass() -> None:
    forward = Recorder()
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=64, max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(4, tag=99)))
    await until(in_pass(batcher))
    waiting = [asyncio.ensure_future(batcher.submit(units(5 + 20 * i, tag=i))) for i in range(8)]
    await until(queued(batcher, 8))
    forward.gate.set()
    await asyncio.gather(held, *waiting)
    batcher.close()
    assert [len(b) for b in forward.batches] == [1, 8]


async def test_a_large_request_is_split_within_size_and_token_limits() -> None:
    forward = Recorder()
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=8, max_batch_tokens=100, max_wait_ms=0))
    lengths = [10, 40, 5, 20, 10, 30, 8, 12] * 4
    result = await batcher.submit(units(*lengths, tag=1))
    batcher.close()
    assert result == [(1, i) for i in range(len(lengths))]
    assert sum(len(b) for b in forward.batches) == len(lengths)
    for batch in forward.batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or max(u.cost for u in batch) * len(batch) <= 100
    # queued sorted by length, so a pass holds similar lengths
    assert [max(u.cost for u in b) for b in forward.batches] == sorted(max(u.cost for u in b) for b in forward.batches)


async def test_tokens_count_padded_only_for_an_engine_that_pads() -> None:
    lengths = (10, 10, 10, 60)  # padded, all four: 4 x 60 = 240 tokens; unpadded: 90
    padded, unpadded = Recorder(), Recorder()
    for forward, pads in ((padded, True), (unpadded, False)):
        batcher = Batcher("m", forward, BatchLimits(max_batch_tokens=100, max_wait_ms=0), padded=pads)
        assert await batcher.submit(units(*lengths, tag=1)) == [(1, i) for i in range(4)]
        batcher.close()
    assert [[u.cost for u in b] for b in padded.batches] == [[10, 10, 10], [60]]
    assert [[u.cost for u in b] for b in unpadded.batches] == [[10, 10, 10, 60]]


async def test_a_unit_longer_than_the_token_budget_still_runs_alone() -> None:
    forward = Recorder()
    batcher = Batcher("m", forward, BatchLimits(max_batch_tokens=16, max_wait_ms=0))
    assert await batcher.submit(units(40, 3, tag=2)) == [(2, 0), (2, 1)]
    batcher.close()
    assert sorted(len(b) for b in forward.batches) == [1, 1]


async def test_units_of_different_groups_never_share_a_pass() -> None:
    forward = Recorder()
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(3, tag=9)))
    await until(in_pass(batcher))
    a = asyncio.ensure_future(batcher.submit(units(3, 3, group=0, tag=1)))
    b = asyncio.ensure_future(batcher.submit(units(3, 3, group=5, tag=2)))
    c = asyncio.ensure_future(batcher.submit(units(3, group=0, tag=3)))
    await until(queued(batcher, 5))
    forward.gate.set()
    await asyncio.gather(held, a, b, c)
    batcher.close()
    for batch in forward.batches:
        assert len({u.group for u in batch}) == 1
    assert [sorted(u.ids[0] for u in batch) for batch in forward.batches[1:]] == [[1, 1, 3], [2, 2]]


async def test_a_failing_batch_fails_every_request_in_it_and_the_thread_lives_on() -> None:
    forward = Recorder(fail_on_tag=1)
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(3, tag=0)))
    await until(in_pass(batcher))
    bad = asyncio.ensure_future(batcher.submit(units(3, tag=1)))
    neighbour = asyncio.ensure_future(batcher.submit(units(3, 4, tag=2)))
    await until(queued(batcher, 3))
    forward.gate.set()
    assert await held == [(0, 0)]
    for request in (bad, neighbour):
        with pytest.raises(InferenceFailed) as err:
            await request
        assert "secret" not in err.value.message
    assert await batcher.submit(units(3, tag=3)) == [(3, 0)]  # the next batch runs
    batcher.close()


async def test_domain_errors_reach_the_requests_as_they_are() -> None:
    batcher = Batcher("m", Recorder(fail_on_tag=1, error=InvalidInput("bad", param="input")), BatchLimits())
    with pytest.raises(InvalidInput):
        await batcher.submit(units(3, tag=1))
    batcher.close()


async def test_a_forward_that_returns_the_wrong_count_is_a_bug_reported_as_500() -> None:
    batcher = Batcher("m", lambda batch: [1], BatchLimits(max_wait_ms=0))
    with pytest.raises(InferenceFailed):
        await batcher.submit(units(3, 3))
    batcher.close()


async def test_past_max_queue_the_batcher_answers_overloaded() -> None:
    forward = Recorder()
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_queue=4, max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(3, tag=0)))  # taken by the thread, not queued
    await until(in_pass(batcher))
    waiting = asyncio.ensure_future(batcher.submit(units(3, 3, 3, tag=1)))
    await until(queued(batcher, 3))
    with pytest.raises(Overloaded) as err:
        await batcher.submit(units(3, 3, tag=2))
    assert err.value.retry_after >= 1 and "4" in err.value.message
    with pytest.raises(LimitExceeded):  # could never fit: not a retry
        await batcher.submit(units(*[3] * 5, tag=3))
    forward.gate.set()
    assert await held == [(0, 0)] and len(await waiting) == 3
    batcher.close()


async def test_a_cancelled_request_has_its_queued_units_dropped() -> None:
    forward = Recorder()
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=2, max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(3, tag=0)))
    await until(in_pass(batcher))
    gone = asyncio.ensure_future(batcher.submit(units(*[3] * 10, tag=1)))
    kept = asyncio.ensure_future(batcher.submit(units(3, tag=2)))
    await until(queued(batcher, 11))
    gone.cancel()
    await until(queued(batcher, 1))  # its units are off the count at once
    forward.gate.set()
    assert await held == [(0, 0)] and await kept == [(2, 0)]
    batcher.close()
    computed = [u.ids[0] for batch in forward.batches for u in batch]
    assert 1 not in computed
    assert batcher.queue_depth == 0


async def test_close_fails_queued_requests_with_503() -> None:
    forward = Recorder()
    forward.gate.clear()
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=0))
    held = asyncio.ensure_future(batcher.submit(units(3, tag=0)))
    await until(in_pass(batcher))
    waiting = asyncio.ensure_future(batcher.submit(units(3, tag=1)))
    await until(queued(batcher, 1))
    batcher.close()
    forward.gate.set()
    with pytest.raises(ModelUnavailable):
        await waiting
    await held  # the pass already running completes
    with pytest.raises(ModelUnavailable):
        await batcher.submit(units(3))


async def test_the_thread_waits_for_announced_requests_but_not_for_a_lone_one() -> None:
    forward = Recorder()
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=500))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await batcher.submit(units(3, tag=0)) == [(0, 0)]
    assert loop.time() - started < 0.4  # nothing announced: no wait

    async def announced(tag: int, delay: float) -> list[object]:
        with batcher.incoming():
            await asyncio.sleep(delay)
            return await batcher.submit(units(3, tag=tag))

    await asyncio.gather(announced(1, 0.0), announced(2, 0.1))
    batcher.close()
    assert [u.ids[0] for u in forward.batches[-1]] == [1, 2]  # the first waited for the second


async def test_after_a_quiet_spell_the_thread_returns_freed_memory_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import embedserve.batching as batching

    calls: list[bool] = []

    def spy() -> bool:
        calls.append(release_freed_memory())  # the real call, counted
        return calls[-1]

    monkeypatch.setattr(batching, "_IDLE_SECONDS", 0.1)
    monkeypatch.setattr(batching, "release_freed_memory", spy)
    batcher = Batcher("m", Recorder(), BatchLimits(max_wait_ms=0))
    await asyncio.sleep(0.3)
    assert calls == []  # nothing ran yet: nothing to give back
    for tag in range(3):
        assert await batcher.submit(units(3, tag=tag)) == [(tag, 0)]
    await until(lambda: bool(calls))
    await asyncio.sleep(0.3)  # three more idle periods: no second release without new work
    batcher.close()
    assert calls == [True]  # once per quiet spell, and glibc's malloc_trim was found


async def test_a_request_past_its_deadline_gets_503_and_its_units_never_run() -> None:
    forward = Recorder()
    forward.gate.clear()  # the thread is stuck in a long pass
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=4, max_wait_ms=0, max_queue=10))
    running = asyncio.ensure_future(batcher.submit(units(4, tag=1)))
    await until(in_pass(batcher))
    ctx = RequestContext("r", deadline=time.monotonic() + 0.1)
    late = asyncio.ensure_future(batcher.submit(units(3, 3, 3, 3, 3, 3, tag=2), ctx))
    await until(lambda: batcher.queue_depth > 0)
    assert batcher.queue_depth == 6
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline"):
        await late
    assert time.monotonic() - started < 1, "answered at its deadline, not when the thread got to it"
    assert batcher.queue_depth == 0  # room for others at once
    assert ctx.queue > 0.05
    room = asyncio.ensure_future(batcher.submit(units(*[2] * 10, tag=3)))  # the whole queue: not a 429
    await until(lambda: batcher.queue_depth > 0)
    assert not room.done()
    forward.gate.set()
    assert await running == [(1, 0)]
    assert len(await room) == 10
    assert await batcher.submit(units(2, tag=4)) == [(4, 0)]
    batcher.close()
    assert all(u.ids[0] != 2 for batch in forward.batches for u in batch), "expired units were computed"


async def test_a_request_whose_deadline_has_passed_is_refused_before_queueing() -> None:
    batcher = Batcher("m", Recorder(), BatchLimits())
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(units(2), RequestContext("r", deadline=time.monotonic() - 1))
    assert batcher.queue_depth == 0
    batcher.close()


async def test_timings_and_the_observer_see_each_pass() -> None:
    seen: list[tuple[int, int, float]] = []
    batcher = Batcher("m", Recorder(), BatchLimits(max_wait_ms=0), observer=lambda *a: seen.append(a))
    ctx = RequestContext("r")
    await batcher.submit(units(4, 6), ctx)
    batcher.close()
    assert [(n, t) for n, t, _ in seen] == [(2, 10)]
    assert ctx.tokens == 10 and ctx.inference == pytest.approx(seen[0][2])


async def test_two_passes_run_side_by_side_inside_the_gate_and_every_request_gets_its_own_outputs() -> None:
    gate = DeviceGate(2)
    inside: list[int] = []  # passes on the device as each pass began
    both_in = threading.Barrier(2, timeout=5)
    calls = itertools.count()

    def forward(batch: Sequence[Tokens]) -> list[tuple[int, int]]:
        if next(calls) < 2:
            both_in.wait()  # the first two passes must overlap
        return [(u.ids[0], u.ids[1]) for u in batch]

    batcher = Batcher(
        "m", forward, BatchLimits(max_batch_size=2, max_wait_ms=0, passes=2), gate, weight=1, prepare=inside.append
    )
    try:
        results = await asyncio.gather(*(batcher.submit(units(3, 4, 5, tag=t)) for t in range(10)))
    finally:
        batcher.close()
    assert results == [[(t, 0), (t, 1), (t, 2)] for t in range(10)]  # requests split across both threads
    assert inside[:2] == [1, 2]
    assert batcher.inputs_computed == 30 and gate.used == 0


async def test_a_pass_that_takes_the_whole_device_runs_alone() -> None:
    gate = DeviceGate(2)
    seen: list[int] = []
    batcher = Batcher(
        "m",
        lambda batch: [0] * len(batch),
        BatchLimits(max_batch_size=1, max_wait_ms=0, passes=2),
        gate,
        prepare=seen.append,
    )
    try:
        await asyncio.gather(*(batcher.submit(units(3, tag=t)) for t in range(8)))
    finally:
        batcher.close()
    assert seen == [1] * 8  # weight: the gate's capacity, so never two at once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread nice values are Linux's")
async def test_batch_threads_run_their_passes_niced_below_the_event_loop() -> None:
    seen: list[int] = []

    def forward(batch: Sequence[Tokens]) -> list[int]:
        seen.append(thread_nice())
        return [0] * len(batch)

    base = thread_nice()
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=0, passes=2), DeviceGate(2), weight=1, nice=6)
    try:
        await asyncio.gather(*(batcher.submit(units(3)) for _ in range(4)))
    finally:
        batcher.close()
    assert seen and set(seen) == {min(19, base + 6)}
    assert thread_nice() == base


class ThreadRecorder(Recorder):
    """A :class:`Recorder` that also notes the thread each pass ran on."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.threads: list[str] = []

    def __call__(self, batch: Sequence[Tokens]) -> list[tuple[int, int]]:
        self.threads.append(threading.current_thread().name)
        return super().__call__(batch)


async def test_a_lone_short_input_runs_on_the_event_loop_once_lone_passes_are_known_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import embedserve.batching as batching

    monkeypatch.setattr(batching, "INLINE_SECONDS", 1.0)  # a busy machine may stretch the recorded passes
    forward = ThreadRecorder()
    seen: list[tuple[int, int, float]] = []
    alone = [True]
    batcher = Batcher(
        "m", forward, BatchLimits(max_wait_ms=0), observer=lambda *a: seen.append(a), alone=lambda: alone[0]
    )
    loop_thread = threading.current_thread().name
    try:
        assert await batcher.submit(units(3, tag=0)) == [(0, 0)]  # nothing measured yet: a batch thread
        ctx = RequestContext("r")
        assert await batcher.submit(units(4, tag=1), ctx) == [(1, 0)]
        assert await batcher.submit(units(3, 5, tag=2)) == [(2, 0), (2, 1)]  # two inputs: a batch thread
        alone[0] = False  # another request in the server: it may be waiting to join this one
        assert await batcher.submit(units(3, tag=3)) == [(3, 0)]
    finally:
        batcher.close()
    assert forward.threads == ["batch-m-0", loop_thread, "batch-m-0", "batch-m-0"]
    assert [(n, t) for n, t, _ in seen] == [(1, 3), (1, 4), (2, 8), (1, 3)]
    assert ctx.tokens == 4 and ctx.inference == pytest.approx(seen[1][2]) and ctx.queue == 0
    assert (batcher.batches, batcher.inputs_computed, batcher.running, batcher.queue_depth) == (4, 5, 0, 0)


async def test_no_input_runs_on_the_event_loop_while_the_model_or_the_device_is_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import embedserve.batching as batching

    monkeypatch.setattr(batching, "INLINE_SECONDS", 1.0)  # a busy machine may stretch the recorded passes
    forward = ThreadRecorder()
    gate = DeviceGate(1)
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=0), gate, alone=lambda: True)
    loop_thread = threading.current_thread().name
    try:
        await batcher.submit(units(3, tag=0))  # measures a lone pass
        gate.acquire(1)  # another model's pass holds the device: the loop must not wait for it
        held = asyncio.ensure_future(batcher.submit(units(3, tag=1)))
        await until(lambda: batcher.queue_depth == 1 or batcher.running == 1)
        gate.release(1)
        assert await held == [(1, 0)]
        forward.gate.clear()  # a pass of this model running: the next lone input queues behind it
        running = asyncio.ensure_future(batcher.submit(units(3, 3, tag=2)))  # two inputs: a batch thread
        await until(in_pass(batcher))
        behind = asyncio.ensure_future(batcher.submit(units(3, tag=3)))
        await until(queued(batcher, 1))
        forward.gate.set()
        assert await running == [(2, 0), (2, 1)] and await behind == [(3, 0)]
        with batcher.incoming(10):  # another request being tokenized: it may join the batch
            assert await batcher.submit(units(3, tag=4)) == [(4, 0)]
        monkeypatch.setattr(batching, "INLINE_SECONDS", 0.0)  # a pass expected to take too long
        assert await batcher.submit(units(3, tag=5)) == [(5, 0)]
        monkeypatch.setattr(batching, "INLINE_SECONDS", 1.0)
        assert await batcher.submit(units(3, tag=6)) == [(6, 0)]
    finally:
        batcher.close()
    assert loop_thread not in forward.threads[:6] and forward.threads[6] == loop_thread
    assert (gate.used, gate.passes) == (0, 0)


async def test_an_input_run_on_the_event_loop_fails_as_a_batch_does_and_the_batcher_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import embedserve.batching as batching

    monkeypatch.setattr(batching, "INLINE_SECONDS", 1.0)  # a busy machine may stretch the recorded passes
    forward = ThreadRecorder(fail_on_tag=1)
    batcher = Batcher("m", forward, BatchLimits(max_wait_ms=0), alone=lambda: True)
    loop_thread = threading.current_thread().name
    try:
        await batcher.submit(units(3, tag=0))
        with pytest.raises(InferenceFailed) as err:
            await batcher.submit(units(3, tag=1))
        assert "secret" not in err.value.message
        assert await batcher.submit(units(3, tag=2)) == [(2, 0)]
    finally:
        batcher.close()
    assert forward.threads[1:] == [loop_thread, loop_thread]
    assert (batcher.running, batcher.queue_depth) == (0, 0)

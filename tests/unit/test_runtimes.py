"""Lanes (engines/runtimes.py) with plain runtimes: which session runs what, order, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from embedserve.engines.runtimes import Lanes


class FakeRuntime:
    """Returns each input's first id as its output row; records its thread count and the batch sizes it saw."""

    input_names = ("input_ids",)

    def __init__(self, threads: int, fail_on: int | None = None) -> None:
        self.threads = threads
        self.fail_on = fail_on
        self.seen: list[int] = []
        self.busy = threading.Lock()

    def run(self, arrays: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        assert self.busy.acquire(blocking=False), "two threads in one session"
        try:
            ids = arrays["input_ids"]
            self.seen.append(ids.shape[0])
            time.sleep(0.001 * ids.shape[1])
            if self.fail_on is not None and int(ids[0, 0]) == self.fail_on:
                raise RuntimeError("lane failed")
            return ids[:, :1].astype(np.float32)
        finally:
            self.busy.release()


def _inputs(*lengths: int) -> list[dict[str, npt.NDArray[np.int64]]]:
    return [{"input_ids": np.full((1, n), i, dtype=np.int64)} for i, n in enumerate(lengths)]


def _lanes(threads: int, streams: int, fail_on: int | None = None) -> tuple[Lanes, list[FakeRuntime]]:
    made: list[FakeRuntime] = []

    def make(t: int) -> FakeRuntime:
        made.append(FakeRuntime(t, fail_on))
        return made[-1]

    return Lanes(make, threads, streams), made


def test_streams_split_the_threads_and_a_wide_session_takes_lone_inputs() -> None:
    lanes, made = _lanes(4, 2)
    assert [r.threads for r in made] == [4, 2, 2]
    out = lanes.run_each(_inputs(5))
    assert out.tolist() == [[0.0]] and made[0].seen == [1] and made[1].seen == made[2].seen == []
    lanes.close()


def test_a_pass_is_spread_over_the_streams_one_input_at_a_time_and_comes_back_in_order() -> None:
    lanes, made = _lanes(2, 2)
    out = lanes.run_each(_inputs(3, 30, 5, 20, 8, 1))
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert made[0].seen == [] and made[1].seen and made[2].seen  # both narrow sessions worked
    assert set(made[1].seen + made[2].seen) == {1} and len(made[1].seen + made[2].seen) == 6
    lanes.close()


def test_one_stream_runs_everything_on_the_wide_session() -> None:
    lanes, made = _lanes(2, 1)
    assert len(made) == 1
    assert lanes.run_each(_inputs(3, 4, 5))[:, 0].tolist() == [0, 1, 2]
    lanes.close()


def test_a_failing_lane_fails_the_pass_after_every_lane_stopped() -> None:
    lanes, made = _lanes(2, 2, fail_on=3)
    with pytest.raises(RuntimeError, match="lane failed"):
        lanes.run_each(_inputs(40, 40, 40, 1))  # input 3 (the shortest, so the last taken) fails
    assert not made[1].busy.locked() and not made[2].busy.locked()
    assert len(made[1].seen) + len(made[2].seen) == 4  # the other lane finished its inputs first
    assert lanes.run_each(_inputs(2, 3))[:, 0].tolist() == [0, 1]  # the next pass runs
    lanes.close()


def test_a_pass_alone_on_the_device_runs_on_the_wide_session() -> None:
    lanes, made = _lanes(2, 2)
    assert lanes.run_pass(_inputs(5), passes=1)[:, 0].tolist() == [0]
    assert made[0].seen == [1] and made[1].seen == made[2].seen == []
    lanes.close()


def test_passes_side_by_side_each_hold_a_narrow_session_and_never_share_one() -> None:
    """Two batch threads' passes at once: each on a narrow session of its own (FakeRuntime asserts
    one thread a session), none on the wide one, every output in its pass's order."""
    lanes, made = _lanes(2, 2)
    outputs: dict[int, list[float]] = {}

    def lane_thread(n: int) -> None:
        rows = []
        for _ in range(10):
            rows += lanes.run_pass(_inputs(3, 1, 2), passes=2)[:, 0].tolist()
        outputs[n] = rows

    threads = [threading.Thread(target=lane_thread, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == {0: [0, 1, 2] * 10, 1: [0, 1, 2] * 10}
    assert made[0].seen == [] and len(made[1].seen) + len(made[2].seen) == 60
    lanes.close()


def test_a_pass_spread_over_the_lanes_waits_for_a_session_another_pass_holds() -> None:
    """run_each (a pass alone, several inputs) takes every narrow session: one that a pass on
    another thread holds is waited for, never shared (FakeRuntime raises on a second thread)."""
    release = threading.Event()
    made: list[FakeRuntime] = []

    class Held(FakeRuntime):
        def run(self, arrays: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
            release.wait(10)
            return super().run(arrays)

    def make(t: int) -> FakeRuntime:
        made.append(Held(t))
        return made[-1]

    lanes = Lanes(make, 2, 2)
    errors: list[BaseException] = []
    results: dict[str, list[float]] = {}

    def run(name: str, call: Callable[[], npt.NDArray[np.float32]]) -> None:
        try:
            results[name] = call()[:, 0].tolist()
        except BaseException as exc:  # reported below
            errors.append(exc)

    holder = threading.Thread(target=run, args=("held", lambda: lanes.run_pass(_inputs(4), passes=2)))
    holder.start()
    while lanes._free.qsize() != 1:
        time.sleep(0.001)  # the holder has its session
    spread = threading.Thread(target=run, args=("spread", lambda: lanes.run_each(_inputs(3, 3))))
    spread.start()
    while lanes._free.qsize() != 0:
        time.sleep(0.001)  # the spread pass has taken the free one and waits for the other
    release.set()
    holder.join()
    spread.join()
    assert errors == [] and results == {"held": [0.0], "spread": [0.0, 1.0]}
    assert made[0].seen == [] and len(made[1].seen) + len(made[2].seen) == 3
    lanes.close()

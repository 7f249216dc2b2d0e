"""Lanes (engines/runtimes.py) with plain runtimes: which session runs what, order, errors."""

from __future__ import annotations

import threading
import time

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

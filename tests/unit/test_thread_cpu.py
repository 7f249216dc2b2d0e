"""CPU time by what the threads do: each thread's own clock under its role, kept after it ends."""

from __future__ import annotations

import threading
import time

import pytest

from embedserve.thread_cpu import AVAILABLE, ROLES, ThreadCPU, role_of

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="threads have no CPU clock of their own here")


def _busy(seconds: float) -> None:
    """Spends about ``seconds`` of CPU on the calling thread."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _thread(name: str, seconds: float, go: threading.Event) -> threading.Thread:
    def run() -> None:
        _busy(seconds)
        go.wait(30)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def _wait_for(predicate: object, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_threads_are_told_apart_by_name_and_the_loop_by_identity() -> None:
    loop = threading.current_thread()
    assert role_of(loop, loop) == "event_loop"
    assert role_of(loop, None) == "other"
    for name, role in [
        ("batch-dense-0", "model"),
        ("embedserve-lane_1", "model"),
        ("tokenize-3", "tokenizer"),
        ("ThreadPoolExecutor-0_0", "other"),
    ]:
        assert role_of(threading.Thread(name=name), loop) == role, name


def test_each_thread_counts_under_its_role_and_keeps_its_time_once_it_ends() -> None:
    cpu = ThreadCPU()
    cpu.loop = threading.current_thread()
    before = cpu.read()
    assert set(before) == set(ROLES)
    go = threading.Event()
    model = _thread("batch-m-0", 0.2, go)
    tokenizer = _thread("tokenize-0", 0.1, go)
    try:
        _wait_for(lambda: cpu.read()["model"] - before["model"] >= 0.19)
        _wait_for(lambda: cpu.read()["tokenizer"] - before["tokenizer"] >= 0.09)
        _busy(0.1)
        during = cpu.read()
        assert during["event_loop"] - before["event_loop"] >= 0.09
    finally:
        go.set()
        model.join(30)
        tokenizer.join(30)
    after = cpu.read()  # both threads have ended
    for role in ROLES:
        assert after[role] >= during[role], role
    assert after["model"] - before["model"] >= 0.19
    total = sum(after.values())
    assert total == pytest.approx(time.process_time(), abs=0.05)  # the roles split the process's time


def test_other_is_the_rest_of_the_process() -> None:
    cpu = ThreadCPU()  # no loop thread: this one's time is the process's remainder
    before = cpu.read()["other"]
    _busy(0.1)
    assert cpu.read()["other"] - before >= 0.09

"""The device gate: capacity, weights, arrival order."""

from __future__ import annotations

import threading
import time

import pytest

from embedserve.gate import DeviceGate


def test_passes_of_weight_one_share_the_capacity_and_count_themselves() -> None:
    gate = DeviceGate(2)
    assert gate.acquire(1) == 1
    assert gate.acquire(1) == 2
    entered = threading.Event()

    def third() -> None:
        with gate.entered(1):
            entered.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not entered.wait(0.1)  # full: the third waits
    gate.release(1)
    assert entered.wait(2)
    thread.join(2)
    gate.release(1)
    assert (gate.used, gate.passes) == (0, 0)


def test_a_whole_device_pass_waits_for_the_others_and_is_not_overtaken() -> None:
    gate = DeviceGate(2)
    gate.acquire(1)
    order: list[str] = []

    def enter(name: str, weight: int) -> None:
        with gate.entered(weight):
            order.append(name)
            time.sleep(0.02)

    whole = threading.Thread(target=enter, args=("whole", 2))
    whole.start()
    time.sleep(0.05)  # the whole-device pass is first in line
    small = threading.Thread(target=enter, args=("small", 1))
    small.start()
    time.sleep(0.05)
    assert order == []  # one unit is free, but the small pass arrived after the whole one
    gate.release(1)
    whole.join(2)
    small.join(2)
    assert order == ["whole", "small"]


def test_weights_are_clamped_to_the_capacity_and_capacity_must_be_positive() -> None:
    gate = DeviceGate(1)
    with gate.entered(8) as passes:
        assert passes == 1 and gate.used == 1
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        DeviceGate(0)


def test_try_acquire_enters_only_when_the_units_are_free_and_nobody_waits() -> None:
    gate = DeviceGate(2)
    assert gate.try_acquire(1) == 1
    assert gate.try_acquire(2) is None  # one unit left
    waiter = threading.Thread(target=lambda: (gate.acquire(2), gate.release(2)))
    waiter.start()
    deadline = time.monotonic() + 5
    while not gate._waiting:  # the whole-device pass is in line
        assert time.monotonic() < deadline, "the waiting pass never got in line"
        time.sleep(0.001)
    assert gate.try_acquire(1) is None  # a unit is free, but the waiting pass came first
    gate.release(1)
    waiter.join(2)
    assert gate.try_acquire(1) == 1
    gate.release(1)
    assert (gate.used, gate.passes) == (0, 0)

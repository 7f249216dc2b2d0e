"""Heap settling: collect, then freeze the survivors; the next settle frees cycles frozen since."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from embedserve.memory import FULL_EVERY, settle_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # leave the test process's collector as it found it
    gc.set_threshold(*thresholds)


def test_settle_freezes_what_is_alive_and_collects_what_is_not() -> None:
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = Node()
    settle_heap()
    assert gone() is None  # collected before the freeze
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen: no generation holds it


def test_a_cycle_frozen_while_alive_is_freed_by_the_next_settle() -> None:
    node = Node()
    settle_heap()
    ref = weakref.ref(node)
    del node
    gc.collect()
    assert ref() is not None  # frozen: full collections skip it
    settle_heap()
    assert ref() is None


def test_after_a_settle_full_collections_wait_for_more_middle_ones_and_the_young_ones_are_as_they_were() -> None:
    young, middle, _ = gc.get_threshold()
    settle_heap()
    assert gc.get_threshold() == (young, middle, FULL_EVERY)
    assert FULL_EVERY > 10  # Python's default

"""priority.py: the threads that load models and run passes are niced, and what they start is too."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from embedserve import context
from embedserve.priority import nice_this_thread, run_niced, thread_nice

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread nice values are Linux's")


def _in_thread(fn):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_a_thread_niced_is_lower_and_the_others_are_not():
    base = thread_nice()

    def niced():
        nice_this_thread(5)
        return thread_nice()

    assert _in_thread(niced) == min(19, base + 5)
    assert thread_nice() == base  # the caller is untouched


def test_nice_adds_to_what_the_thread_had_and_stops_at_19():
    def twice():
        nice_this_thread(12)
        nice_this_thread(12)
        return thread_nice()

    assert _in_thread(twice) == 19


def test_zero_changes_nothing():
    base = thread_nice()

    def zero():
        nice_this_thread(0)
        return thread_nice()

    assert _in_thread(zero) == base


def test_threads_started_by_a_niced_thread_inherit_its_value():
    base = thread_nice()
    seen: dict[str, int] = {}

    def parent():
        nice_this_thread(7)
        child = threading.Thread(target=lambda: seen.__setitem__("child", thread_nice()))
        child.start()
        child.join()
        return thread_nice()

    assert _in_thread(parent) == min(19, base + 7)
    assert seen["child"] == min(19, base + 7)


def test_run_niced_returns_on_a_niced_thread_with_the_callers_context():
    base = thread_nice()
    request = context.RequestContext(id="r-1")

    def work(x: int) -> tuple[int, int, str | None]:
        current = context.current.get()
        return x * 2, thread_nice(), current.id if current else None

    async def main():
        token = context.current.set(request)
        try:
            return await run_niced(4, work, 21)
        finally:
            context.current.reset(token)

    assert asyncio.run(main()) == (42, min(19, base + 4), "r-1")
    assert thread_nice() == base


def test_run_niced_raises_what_the_function_raised():
    def boom():
        raise ValueError("no model here")

    with pytest.raises(ValueError, match="no model here"):
        asyncio.run(run_niced(3, boom))

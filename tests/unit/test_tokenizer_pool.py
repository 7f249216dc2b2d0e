"""The shared tokenizer pool on plain functions: shorter jobs first, the queue bound, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from embedserve.errors import DeadlineExceeded, Overloaded
from embedserve.tokenizer_pool import TokenizerPool, chunks

pytestmark = pytest.mark.anyio


async def test_a_short_job_queued_behind_a_long_one_goes_first() -> None:
    pool = TokenizerPool(1)
    gate = threading.Event()
    order: list[str] = []
    try:
        blocker = asyncio.create_task(pool.run(gate.wait, 1, None, "m"))
        await asyncio.sleep(0.05)  # the thread is busy with the blocker
        long = asyncio.create_task(pool.run(lambda: order.append("long"), 5_000_000, None, "m"))
        await asyncio.sleep(0.01)
        short = asyncio.create_task(pool.run(lambda: order.append("short"), 100, None, "m"))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(blocker, long, short)
        assert order == ["short", "long"]
    finally:
        pool.close()


async def test_the_queue_is_bounded_and_a_deadline_drops_a_waiting_job() -> None:
    pool = TokenizerPool(1, max_pending_chars=1000)
    gate = threading.Event()
    ran: list[int] = []
    try:
        with pool.admit(900, "m"):
            with pytest.raises(Overloaded, match="tokenizer is busy"), pool.admit(200, "m"):
                pass
            blocker = asyncio.create_task(pool.run(gate.wait, 1, None, "m"))
            await asyncio.sleep(0.05)
            with pytest.raises(DeadlineExceeded, match="waited to be tokenized"):
                await pool.run(lambda: ran.append(1), 10, time.monotonic() + 0.1, "m")
            gate.set()
            await blocker
            assert await pool.run(lambda: 7, 10, None, "m") == 7
        assert ran == [] and pool.pending_chars == 0  # the expired job never ran
    finally:
        pool.close()


def test_chunks_keep_order_and_cut_at_the_size() -> None:
    texts = ["a" * 100, "b" * 100, "c" * 250, "d"]
    assert list(chunks(texts, 200)) == [texts[:2], [texts[2]], [texts[3]]]
    assert [t for part in chunks(texts, 1) for t in part] == texts


async def test_a_short_job_runs_on_the_event_loop_and_a_longer_one_on_a_thread() -> None:
    pool = TokenizerPool(1, inline_chars=100)
    try:
        loop_thread = threading.get_ident()
        assert await pool.run(threading.get_ident, 100, None, "m") == loop_thread
        assert await pool.run(threading.get_ident, 101, None, "m") != loop_thread
        with pytest.raises(DeadlineExceeded):  # the deadline still holds
            await pool.run(threading.get_ident, 10, time.monotonic() - 1, "m")
    finally:
        pool.close()

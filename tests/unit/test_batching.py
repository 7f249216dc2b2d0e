from __future__ import annotations

import asyncio
import threading
import time

import pytest

from embedserve.batching import ModelWorker
from embedserve.errors import InferenceFailed, InvalidInput


@pytest.mark.anyio
async def test_runs_off_the_loop_one_call_at_a_time() -> None:
    worker = ModelWorker("m")
    active, peak = 0, 0
    lock = threading.Lock()

    def work() -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return threading.current_thread().name

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(10):
            await asyncio.sleep(0.01)
            ticks += 1

    names, _ = await asyncio.gather(asyncio.gather(*(worker.run(work) for _ in range(4))), ticker())
    worker.close()
    assert peak == 1  # the engine never sees two calls at once
    assert ticks == 10  # the event loop kept running meanwhile
    assert all(n.startswith("model-m") for n in names)


@pytest.mark.anyio
async def test_errors_reach_the_caller_and_the_worker_lives_on() -> None:
    worker = ModelWorker("m")

    def boom() -> None:
        raise RuntimeError("secret internals")

    def bad_input() -> None:
        raise InvalidInput("bad", param="input")

    with pytest.raises(InferenceFailed) as err:
        await worker.run(boom)
    assert "secret" not in err.value.message
    with pytest.raises(InvalidInput):
        await worker.run(bad_input)
    with pytest.raises(RuntimeError, match="secret"):
        await worker.run(boom, guarded=False)
    assert await worker.run(lambda: 42) == 42
    assert worker.pending == 0
    worker.close()

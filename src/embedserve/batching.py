"""Running model work off the event loop.

Each model owns one worker thread, so its engine sees one call at a time (engines need no
locks) while other models run in parallel and the event loop stays free. Every call resolves
its future: with the result, the domain error it raised, or ``InferenceFailed`` for anything
else (logged with its traceback here, never sent to the client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from embedserve.errors import EmbedServeError, InferenceFailed

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelWorker:
    """A single thread that runs one model's calls in arrival order."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model_id}")
        self.pending = 0

    async def run(self, fn: Callable[[], T], *, guarded: bool = True) -> T:
        """Run ``fn`` in the model's thread and wait for it without blocking the loop.

        ``guarded=False`` lets any exception through as it is (model loading reports its own)."""
        self.pending += 1
        try:
            return await asyncio.wrap_future(self._pool.submit(self._guarded if guarded else _call, fn))
        finally:
            self.pending -= 1

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except EmbedServeError:
            raise
        except Exception as exc:
            log.exception("model %s: inference failed", self.model_id)
            raise InferenceFailed(f"model '{self.model_id}' failed to compute this request") from exc

    def close(self) -> None:
        """Stop the thread once its current call ends; queued calls are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call(fn: Callable[[], T]) -> T:
    return fn()

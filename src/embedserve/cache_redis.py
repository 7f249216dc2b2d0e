"""The shared tier of the embedding cache: Redis (the ``cache_url`` setting), through redis-py's
asyncio client.

A lookup is one ``MGET`` of the request's keys; the values of computed inputs go back in one
pipelined ``SET ... EX ttl`` per request, sent in the background (the response does not wait for
it). Redis must never fail or slow a request: every call is bounded by ``timeout`` seconds (the
client's socket timeouts, and the whole call under ``asyncio.wait_for``; no retries), and any error
counts in ``/metrics`` and makes the call a miss. After an error Redis is left alone for
``pause`` seconds, so a Redis that is down or does not answer costs at most one timeout per pause,
not one per request. The first error after a working spell is logged, and so is the recovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

PREFIX = b"embedserve:"  # every key this server writes starts with it
MAX_PENDING_WRITES = 64  # background stores in flight; past it a computed value stays in memory only
MAX_CONNECTIONS = 64


class RedisTier:
    """Redis as :class:`~embedserve.cache.SharedTier`."""

    def __init__(self, url: str, *, timeout: float, ttl: int, pause: float | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.ttl = ttl
        self.pause = pause if pause is not None else max(1.0, 20 * timeout)
        self.errors: dict[str, int] = {}
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=MAX_CONNECTIONS,
        )
        self._paused_until = 0.0
        self._failing = False
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def available(self) -> bool:
        """False while Redis is left alone after an error."""
        return time.monotonic() >= self._paused_until

    async def get_many(self, keys: Sequence[bytes], model: str) -> list[bytes | None]:
        """``MGET`` of the keys; all None when Redis fails, is slow, or is paused."""
        if not self.available:
            return [None] * len(keys)
        try:
            values = await asyncio.wait_for(self._client.mget([PREFIX + k for k in keys]), self.timeout)
        except Exception as exc:  # any failure is a miss: the cache never fails a request
            self._failed(exc, model)
            return [None] * len(keys)
        self._ok()
        return [v if isinstance(v, bytes) else None for v in values]

    def put_many(self, items: Sequence[tuple[bytes, bytes]], model: str) -> None:
        """Store the values in the background (one pipelined round trip), each with the TTL."""
        if not self.available or len(self._writes) >= MAX_PENDING_WRITES:
            return
        task = asyncio.get_running_loop().create_task(self._put(list(items), model))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, items: list[tuple[bytes, bytes]], model: str) -> None:
        try:
            await asyncio.wait_for(self._send(items), self.timeout)
        except Exception as exc:
            self._failed(exc, model)
            return
        self._ok()

    async def _send(self, items: list[tuple[bytes, bytes]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in items:
                pipe.set(PREFIX + key, value, ex=self.ttl or None)
            await pipe.execute()

    def _failed(self, exc: BaseException, model: str) -> None:
        self.errors[model] = self.errors.get(model, 0) + 1
        self._paused_until = time.monotonic() + self.pause
        if not self._failing:
            self._failing = True
            log.warning(
                "embedding cache: Redis at %s failed (%s: %s); computing without it, trying again in %.0f s",
                _safe(self.url),
                type(exc).__name__,
                exc,
                self.pause,
            )

    def _ok(self) -> None:
        if self._failing:
            self._failing = False
            log.info("embedding cache: Redis at %s answers again", _safe(self.url))

    async def drain(self) -> None:
        """Wait for the background stores in flight (each is bounded by the timeout)."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self._client.aclose()


def _safe(url: str) -> str:
    """The URL without its password, for the log."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"

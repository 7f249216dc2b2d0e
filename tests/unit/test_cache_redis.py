"""The Redis tier of the embedding cache against a real redis-server: values round-trip bit for
bit with their TTL, Redis hits fill the memory tier, and a Redis that is gone or never answers
is a miss and a counted error, never an exception."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from helpers.redis_server import RedisServer, blackhole, running_redis
from redis.asyncio import Redis

from embedserve.cache import Cached, EmbeddingCache
from embedserve.cache_redis import PREFIX, RedisTier
from embedserve.engines.base import SparseVector

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def raw_client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _values() -> list[tuple[bytes, Cached]]:
    rng = np.random.default_rng(0)
    dense = Cached(rng.standard_normal(384).astype(np.float32), 9, 9)
    sparse = Cached(SparseVector(np.array([1, 5], dtype=np.int64), np.array([0.5, 2.0], dtype=np.float32)), 4, 40)
    return [(b"k" * 16, dense), (b"s" * 16, sparse)]


async def test_values_round_trip_bit_for_bit_with_their_ttl(redis_server: RedisServer, raw_client: Redis) -> None:
    tier = RedisTier(redis_server.url, timeout=1.0, ttl=600)
    cache = EmbeddingCache(0, tier)
    try:
        cache.put_many(_values(), "m")
        await tier.drain()
        (dense_key, dense), (sparse_key, sparse) = _values()
        found = await cache.get_many([dense_key, b"missing" * 2 + b"xx", sparse_key], "m")
    finally:
        await cache.close()
    assert found[1] is None
    assert found[0] is not None and found[0].output.tobytes() == dense.output.tobytes()
    assert (found[0].cost, found[0].original) == (9, 9)
    assert found[2] is not None and found[2].output.values.tobytes() == sparse.output.values.tobytes()
    assert found[2].original == 40
    assert 0 < await raw_client.ttl(PREFIX + dense_key) <= 600
    assert cache.counts.hits == {("m", "redis"): 2} and cache.counts.misses == {("m", "redis"): 1}
    assert tier.errors == {}


async def test_a_redis_hit_is_kept_in_memory_too(redis_server: RedisServer) -> None:
    writer = EmbeddingCache(0, RedisTier(redis_server.url, timeout=1.0, ttl=60))
    reader = EmbeddingCache(1 << 20, RedisTier(redis_server.url, timeout=1.0, ttl=60))
    try:
        writer.put_many(_values(), "m")
        assert writer.shared is not None
        await writer.shared.drain()  # type: ignore[attr-defined]
        keys = [key for key, _ in _values()]
        await reader.get_many(keys, "m")
        await reader.get_many(keys, "m")
    finally:
        await writer.close()
        await reader.close()
    assert reader.counts.hits == {("m", "redis"): 2, ("m", "memory"): 2}
    assert reader.counts.misses == {("m", "memory"): 2}


async def test_bytes_it_did_not_write_are_a_miss(redis_server: RedisServer, raw_client: Redis) -> None:
    await raw_client.set(PREFIX + b"f" * 16, b"someone else's value")
    cache = EmbeddingCache(0, RedisTier(redis_server.url, timeout=1.0, ttl=60))
    try:
        assert await cache.get_many([b"f" * 16], "m") == [None]
    finally:
        await cache.close()


async def test_a_redis_that_is_gone_is_a_counted_miss_then_left_alone(redis_server: RedisServer) -> None:
    tier = RedisTier(redis_server.url, timeout=1.0, ttl=60, pause=600)
    cache = EmbeddingCache(1 << 20, tier)
    try:
        cache.put_many(_values(), "m")
        await tier.drain()
        redis_server.kill()
        assert await cache.get_many([b"x" * 16, b"y" * 16], "m") == [None, None]
        assert tier.errors == {"m": 1} and not tier.available
        # paused: neither a lookup nor a store tries Redis again (no second error)
        assert await cache.get_many([b"z" * 16], "m") == [None]
        cache.put_many(_values(), "m")
        await tier.drain()
        assert tier.errors == {"m": 1}
        # the memory tier still answers what it holds
        found = await cache.get_many([_values()[0][0]], "m")
        assert found[0] is not None
    finally:
        await cache.close()


async def test_a_redis_that_never_answers_is_a_counted_miss() -> None:
    with blackhole() as url:
        tier = RedisTier(url, timeout=0.2, ttl=60, pause=0)
        cache = EmbeddingCache(0, tier)
        try:
            assert await cache.get_many([b"x" * 16], "m") == [None]
            cache.put_many(_values(), "m")
            await tier.drain()
        finally:
            await cache.close()
    assert tier.errors == {"m": 2}

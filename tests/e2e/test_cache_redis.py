"""The embedding cache shared in a real redis-server by real server processes: a second process gets
the first one's vectors, bit for bit; a Redis killed mid-run or one that never answers (only
accepts connections) costs no request (each is answered 200 and the failures are counted in /metrics)."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers.redis_server import blackhole, running_redis
from helpers.server import running_server
from helpers.tiny_models import tiny_catalog_data
from redis import Redis


@pytest.fixture(scope="module")
def catalog(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache-redis") / "models.yaml"
    models = tiny_catalog_data(tiny_models)["models"]
    path.write_text(yaml.safe_dump({"models": {k: models[k] for k in ("tiny-dense", "tiny-sparse")}}))
    return path


def embed(url: str, texts: list[str], model: str = "tiny-dense") -> httpx.Response:
    body: dict[str, Any] = {"model": model, "input": texts}
    if model == "tiny-dense":
        body["encoding_format"] = "base64"
    response = httpx.post(
        f"{url}/api/v1/embeddings" if model == "tiny-dense" else f"{url}/api/v1/embed_sparse", json=body, timeout=60
    )
    assert response.status_code == 200, response.text
    return response


def metric(url: str, name: str, **labels: str) -> float:
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and set(match.group(1).split(",")) == wanted:
            return float(match.group(2))
    return 0.0


def wait_for_keys(url: str, count: int, timeout: float = 30.0) -> None:
    """Stores go to Redis in the background, after the response: poll until they are there."""
    client = Redis.from_url(url)
    try:
        deadline = time.monotonic() + timeout
        while client.dbsize() < count:
            assert time.monotonic() < deadline, f"Redis holds {client.dbsize()} keys, not {count}, after {timeout} s"
            time.sleep(0.05)
    finally:
        client.close()


def test_a_second_process_gets_the_first_ones_vectors_bit_for_bit_and_outlives_redis(catalog: Path) -> None:
    texts = ["the heart pumps blood", "a recipe for apple pie"]
    with running_redis() as redis:
        env = {"EMBEDSERVE_CACHE_URL": redis.url, "EMBEDSERVE_CACHE_TIMEOUT": "1"}
        with running_server(catalog, env=env) as first:
            computed = [embed(first.url, [t]) for t in texts]
            sparse = embed(first.url, texts, model="tiny-sparse")
            assert [r.headers["x-cache-hits"] for r in computed] == ["0", "0"]
            wait_for_keys(redis.url, 4)
        with running_server(catalog, env=env) as second:
            cached = embed(second.url, texts)
            assert cached.headers["x-cache-hits"] == "2"
            vectors = [base64.b64decode(item["embedding"]) for item in cached.json()["data"]]
            assert vectors == [base64.b64decode(r.json()["data"][0]["embedding"]) for r in computed]
            assert cached.json()["usage"]["prompt_tokens"] == sum(r.json()["usage"]["prompt_tokens"] for r in computed)
            sparse_again = embed(second.url, texts, model="tiny-sparse")
            assert sparse_again.headers["x-cache-hits"] == "2" and sparse_again.json()["data"] == sparse.json()["data"]
            assert metric(second.url, "embedserve_cache_hits_total", model="tiny-dense", backend="redis") == 2
            assert metric(second.url, "embedserve_cache_misses_total", model="tiny-dense", backend="memory") == 2
            assert metric(second.url, "embedserve_cache_errors_total", model="tiny-dense", backend="redis") == 0
            assert "embedding cache: Redis" not in second.log()

            redis.kill()  # mid-run
            for i in range(5):
                response = embed(second.url, [f"after the crash {i}", texts[0]])
                assert response.headers["x-cache-hits"] == "1"  # the in-process tier still answers
            assert metric(second.url, "embedserve_cache_errors_total", model="tiny-dense", backend="redis") >= 1
            assert second.log().count("embedding cache: Redis at") == 1  # logged once, not per request


def test_a_redis_that_never_answers_costs_no_request(catalog: Path) -> None:
    with blackhole() as url:
        secret = url.replace("redis://", "redis://:hunter2@")
        env = {"EMBEDSERVE_CACHE_URL": secret, "EMBEDSERVE_CACHE_TIMEOUT": "0.1", "EMBEDSERVE_CACHE_BYTES": "0"}
        with running_server(catalog, env=env) as server:
            for i in range(5):
                response = embed(server.url, [f"text {i}"])
                assert response.headers["x-cache-hits"] == "0"
            assert metric(server.url, "embedserve_cache_errors_total", model="tiny-dense", backend="redis") >= 1
            assert server.log().count("embedding cache: Redis at redis://***@127.0.0.1") == 1
            assert "hunter2" not in server.log()

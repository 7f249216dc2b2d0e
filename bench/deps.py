"""What reading the app's state costs a request: as FastAPI dependencies against plain functions
(``api/deps.py``), side by side in one process, on the real app with a model-free engine.

Two routes run the same handler body (OpenAI's embeddings, one short text): the app's own
``/v1/embeddings``, which reads the registry and limits with ``registry_of(request)`` /
``limits_of(request)``, and a copy at ``/with-depends/v1/embeddings`` that gets them as
``Annotated[..., Depends(...)]`` parameters. Rounds of requests alternate between the two; the
figure is CPU microseconds a request (all threads), median of the rounds::

    python bench/deps.py                 # 16 rounds of 200 requests
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from fastapi import Depends, Request  # noqa: E402
from helpers.app_client import app_client  # noqa: E402
from helpers.tiny_models import FAKE_TOKENIZER  # noqa: E402
from shed import _request  # noqa: E402

from embedserve import tasks  # noqa: E402
from embedserve.api import create_app, openai  # noqa: E402
from embedserve.api.responses import FastJSONResponse, usage  # noqa: E402
from embedserve.api.schemas import EmbeddingRequest  # noqa: E402
from embedserve.catalog import parse_catalog  # noqa: E402
from embedserve.registry import Registry  # noqa: E402
from embedserve.settings import Settings  # noqa: E402

SENTENCE = "what is the effect of aspirin on heart attack risk in older adults"
ROUTES = ("/v1/embeddings", "/with-depends/v1/embeddings")


async def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


async def _limits(request: Request) -> tasks.Limits:
    limits: tasks.Limits = request.app.state.limits
    return limits


async def with_depends(
    body: EmbeddingRequest,
    registry: Annotated[Registry, Depends(_registry)],
    limits: Annotated[tasks.Limits, Depends(_limits)],
) -> FastJSONResponse:
    """``openai.create_embeddings``' body (float encoding), its state as two dependencies."""
    handle = registry.for_task(body.model, "embeddings")
    texts = await openai.input_texts(handle, body.input, limits)
    options, _ = await openai.embed_options(body, handle)
    result = await tasks.embed(handle, texts, options, limits)
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(result.embeddings)]
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": usage(result.tokens)})


def _app() -> Any:
    catalog = parse_catalog(
        {"models": {"m": {"name": FAKE_TOKENIZER, "engine": "fake", "type": "embeddings", "dimensions": 384}}}, ROOT
    )
    app = create_app(Settings(cache_bytes=0), catalog)
    app.add_api_route(ROUTES[1], with_depends, methods=["POST"])
    return app


async def _run(requests: int, rounds: int) -> dict[str, float]:
    app = _app()
    body = orjson.dumps({"model": "m", "input": SENTENCE})
    cpu: dict[str, list[float]] = {route: [] for route in ROUTES}
    async with app_client(app):
        for route in ROUTES:  # warm
            for _ in range(requests):
                assert await _request(app, "POST", route, body) == 200
        for r in range(rounds):
            for route in ROUTES if r % 2 else ROUTES[::-1]:
                started = time.process_time()
                for _ in range(requests):
                    await _request(app, "POST", route, body)
                cpu[route].append((time.process_time() - started) / requests * 1e6)
    return {route: statistics.median(values) for route, values in cpu.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests a round")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args(argv)
    plain, depends = (v for v in asyncio.run(_run(args.requests, args.rounds)).values())
    print(f"state as plain functions:      {plain:7.0f} µs CPU a request (median of {args.rounds} rounds)")
    extra = f"{depends - plain:+.0f} µs, {depends / plain:.2f}x"
    print(f"state as FastAPI dependencies: {depends:7.0f} µs CPU a request ({extra})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

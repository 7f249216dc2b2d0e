"""What Starlette's router and FastAPI's general request handler cost a request, against the
direct call of ``api/direct_routes.py`` and the fast handler of ``api/fast_route.py``, side by
side in one process, on the real app with a model-free engine.

Three apps from one catalogue: the app as served (its compute routes called past the router),
the same app with the direct call taken out of its middleware (the router, then the route's fast
handler), and that app built with FastAPI's own handler on every route. Rounds of requests
alternate between them, for each route measured (OpenAI's embeddings and Cohere's rerank, and
TEI's embed with ``X-Model``); the figure is CPU microseconds a request (all threads), median of
the rounds::

    python bench/fast_route.py                 # 16 rounds of 200 requests
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import fastapi.routing
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from fastapi.routing import APIRoute  # noqa: E402
from helpers.app_client import app_client, take_out_middleware  # noqa: E402
from helpers.tiny_models import FAKE_TOKENIZER  # noqa: E402
from shed import _request  # noqa: E402

from embedserve.api import create_app  # noqa: E402
from embedserve.api.direct_routes import DirectRoutes  # noqa: E402
from embedserve.api.fast_route import FastBodyRoute  # noqa: E402
from embedserve.catalog import parse_catalog  # noqa: E402
from embedserve.settings import Settings  # noqa: E402

QUERY = "what is the effect of aspirin on heart attack risk in older adults"
DOCUMENT = "Aspirin lowers the risk of a first heart attack in adults over 50, at the cost of more bleeding."
REQUESTS = {  # name: (path, body, extra headers)
    "openai embeddings": ("/v1/embeddings", {"model": "m", "input": QUERY}, []),
    "cohere rerank": ("/v2/rerank", {"model": "r", "query": QUERY, "documents": [DOCUMENT] * 4}, []),
    "tei embed, X-Model": ("/embed", {"inputs": QUERY}, [(b"x-model", b"m")]),
}


def _app() -> Any:
    catalog = parse_catalog(
        {
            "models": {
                "m": {"name": FAKE_TOKENIZER, "engine": "fake", "type": "embeddings", "dimensions": 384},
                "r": {"name": FAKE_TOKENIZER, "engine": "fake", "type": "rerank"},
            }
        },
        ROOT,
    )
    return create_app(Settings(cache_bytes=0), catalog)


async def _first_requests(app: Any, fast: bool) -> None:
    """One request to each route, which builds the app's handlers for its included routes (FastAPI
    builds them on an app's first request); ``fast=False``: FastAPI's own handler on every route.
    Checks that the arm takes the handler it names (FastAPI's solves each request's parameters)."""
    solved = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(1)
        return await solve(*args, **kwargs)

    general = mock.patch.object(FastBodyRoute, "get_route_handler", APIRoute.get_route_handler)
    with (
        mock.patch.object(fastapi.routing, "solve_dependencies", counting),
        contextlib.nullcontext() if fast else general,
    ):
        for path, payload, headers in REQUESTS.values():
            assert await _request(app, "POST", path, orjson.dumps(payload), headers) == 200
    assert len(solved) == (0 if fast else len(REQUESTS)), (fast, solved)


ARMS = ("served", "routed", "general")


async def _run(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    apps = {arm: _app() for arm in ARMS}
    cpu: dict[str, dict[str, list[float]]] = {name: {arm: [] for arm in apps} for name in REQUESTS}
    async with contextlib.AsyncExitStack() as stack:
        for arm, app in apps.items():
            await stack.enter_async_context(app_client(app))
            if arm != "served":
                take_out_middleware(app, DirectRoutes)
            await _first_requests(app, fast=arm != "general")
        for name, (path, payload, headers) in REQUESTS.items():
            body = orjson.dumps(payload)
            for app in apps.values():  # warm, and every request answered
                for _ in range(requests):
                    status = await _request(app, "POST", path, body, headers)
                    assert status == 200, (name, status)
            for r in range(rounds):
                for arm in list(apps)[r % len(apps) :] + list(apps)[: r % len(apps)]:
                    app = apps[arm]
                    started = time.process_time()
                    for _ in range(requests):
                        await _request(app, "POST", path, body, headers)
                    cpu[name][arm].append((time.process_time() - started) / requests * 1e6)
    return {name: {arm: statistics.median(v) for arm, v in arms.items()} for name, arms in cpu.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests a round")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args(argv)
    results = asyncio.run(_run(args.requests, args.rounds))
    print(f"CPU µs a request, median of {args.rounds} rounds of {args.requests}")
    print(f"{'request':<22} {'served':>8} {'router, fast handler':>21} {'router, FastAPI general':>24}")
    for name, arms in results.items():
        served, routed, general = (arms[arm] for arm in ARMS)
        ratios = f"{routed:13.0f} ({routed / served:.2f}x) {general:16.0f} ({general / served:.2f}x)"
        print(f"{name:<22} {served:8.0f} {ratios}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a refused request costs the event loop: refused before routing (src/embedserve/api/shed.py)
against refused by its route, and ``/health`` likewise; in-process, side by side.

Two copies of the real app (ASGI, no socket; ``engine: fake``, so no model runs), the same but
for the shed, taken out of the second's middleware. In each, the model is held busy (its device
gate taken, work queued, its throughput set so that the work ahead takes 100 s of a request's
36 s), so every request naming it is refused with 429. Requests are sent one after another
straight to the app, alternating between the copies in rounds; prints the median microseconds a
request over the rounds, and the ratio::

    python bench/shed.py [--requests N] [--rounds R] [--json OUT]

The figures are the event loop's CPU for one request from the first middleware to the last byte
of its answer, without uvicorn's HTTP parsing and writing (the same in both), on the machine the
bench runs on; ``bench/overload.py`` floods a real server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from common import http_scope, write_json  # noqa: E402
from helpers.app_client import app_client, take_out_middleware  # noqa: E402
from helpers.tiny_models import FAKE_TOKENIZER  # noqa: E402

from embedserve.api import create_app  # noqa: E402
from embedserve.api.shed import Shed  # noqa: E402
from embedserve.catalog import parse_catalog  # noqa: E402
from embedserve.settings import Settings  # noqa: E402

SENTENCE = "a server under a flood of requests should refuse at once what it cannot compute in time"
CASES: dict[str, tuple[str, str, bytes]] = {  # name → method, path, body
    "429, 1 text": ("POST", "/v1/embeddings", orjson.dumps({"model": "held", "input": [SENTENCE]})),
    "429, 16 texts": ("POST", "/v1/embeddings", orjson.dumps({"model": "held", "input": [SENTENCE] * 16})),
    "429, TEI": ("POST", "/embed", orjson.dumps({"inputs": SENTENCE})),
    "GET /health": ("GET", "/health", b""),
}


def _app() -> Any:
    catalog = parse_catalog(
        {
            "models": {
                "held": {
                    "name": FAKE_TOKENIZER,
                    "engine": "fake",
                    "type": "embeddings",
                    "batching": {"max_wait_ms": 0, "passes": 1},
                }
            }
        },
        ROOT,
    )
    return create_app(Settings(), catalog)


async def _request(
    app: Any, method: str, path: str, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> int:
    status = 0
    delivered = False
    answered = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body", False):
            answered.set()

    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), *(extra_headers or [])]
    scope = http_scope(method, path, [*headers, (b"content-length", str(len(body)).encode())], 8000)
    await app(scope, receive, send)
    return status


async def _hold(app: Any) -> tuple[asyncio.Future[Any], Callable[[], None]]:
    """The app's model busy: its pass held at the device gate, 100 s of work ahead of any request.
    The work, and what lets it go."""
    handle = app.state.registry.get("held")
    gate = app.state.registry.device_gate(handle.engine.device)
    gate.acquire(gate.capacity)
    units = handle.engine.tokenizer.encode([SENTENCE * 10] * 8)
    work = asyncio.ensure_future(handle.submit(units))
    while handle.batcher.running == 0:
        await asyncio.sleep(0.005)
    handle.batcher.estimator.observe_pass(sum(u.cost for u in units), 100.0)
    return work, lambda: gate.release(gate.capacity)


async def _timed(app: Any, method: str, path: str, body: bytes, n: int) -> float:
    expected = 200 if method == "GET" else 429
    started = time.perf_counter()
    for _ in range(n):
        status = await _request(app, method, path, body)
        if status != expected:
            raise SystemExit(f"{method} {path}: {status}, not {expected}")
    return (time.perf_counter() - started) / n * 1e6


async def run(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    shed, routed = _app(), _app()
    async with app_client(shed), app_client(routed):
        for app in (shed, routed):
            await _request(app, "GET", "/health", b"")  # builds the middleware stack
        take_out_middleware(routed, Shed)
        held = [await _hold(shed), await _hold(routed)]
        times: dict[str, dict[str, list[float]]] = {name: {"shed": [], "route": []} for name in CASES}
        try:
            for _ in range(rounds):
                for name, (method, path, body) in CASES.items():
                    times[name]["shed"].append(await _timed(shed, method, path, body, requests))
                    times[name]["route"].append(await _timed(routed, method, path, body, requests))
        finally:
            for _, release in held:
                release()
            await asyncio.gather(*(work for work, _ in held))
    return {
        name: {arm: round(statistics.median(values), 1) for arm, values in arms.items()} for name, arms in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests a round, per case and arm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.requests, args.rounds))
    print(f"{'':16}{'before routing':>16}{'by the route':>16}{'ratio':>8}   (µs a request, median of rounds)")
    for name, row in rows.items():
        print(f"{name:16}{row['shed']:>16}{row['route']:>16}{row['route'] / row['shed']:>7.1f}x")
    if args.json:
        write_json(args.json, {"requests": args.requests, "rounds": args.rounds, "us_per_request": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

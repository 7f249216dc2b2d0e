"""What the production middleware costs a request: the app called directly over ASGI (no socket,
no client), with the request context, API-key and body-limit middleware and without them, in
alternating rounds of the same run.

    python bench/middleware.py [--requests 5000] [--rounds 5] [--json OUT]

Two requests: ``GET /health`` (nothing else to do, so the overhead is all there is) and a
``POST /api/v1/models/{id}/unload`` of an unknown model with a 20 kB body (read, checked for
depth, routed, answered 404): every layer runs, no model does.

The middleware side includes its access-log line (text, into /dev/null). It replaces uvicorn's
own access log, which ran on every request before and is off now, so against the server as it
was the difference is smaller than printed here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, http_scope, write_json

from embedserve.api import create_app
from embedserve.api.auth import APIKeyAuth
from embedserve.api.body_limit import BodyLimits
from embedserve.api.request_context import RequestContextMiddleware
from embedserve.catalog import load_catalog
from embedserve.logs import configure_logging
from embedserve.settings import Settings

KEY = "bench-key"
ADDED = (RequestContextMiddleware, APIKeyAuth, BodyLimits)


def _app(with_middleware: bool) -> Any:
    settings = Settings(lazy=True, api_keys=KEY)
    app = create_app(settings, load_catalog(ROOT / "models.yaml", check_sources=False))
    if not with_middleware:
        app.user_middleware = [m for m in app.user_middleware if m.cls not in ADDED]
    return app


async def _call(app: Any, method: str, path: str, body: bytes) -> int:
    headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = http_scope(method, path, headers)
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _lifespan_start(app: Any) -> None:
    from asgi_lifespan import LifespanManager

    manager = LifespanManager(app)
    await manager.__aenter__()
    app.state.bench_manager = manager


async def _run(requests: int, rounds: int) -> dict[str, Any]:
    apps = {"with": _app(True), "without": _app(False)}
    for app in apps.values():
        await _lifespan_start(app)
    body = b'{"input": ["' + b"x" * 20_000 + b'"]}'
    cases = {"GET /health": ("GET", "/health", b""), "POST 20 kB, 404": ("POST", "/api/v1/models/nope/unload", body)}
    results: dict[str, Any] = {}
    for name, (method, path, payload) in cases.items():
        times: dict[str, list[float]] = {"with": [], "without": []}
        for _ in range(rounds):
            for which, app in apps.items():
                status = await _call(app, method, path, payload)
                assert status in (200, 404), (name, which, status)
                started = time.perf_counter()
                for _ in range(requests):
                    await _call(app, method, path, payload)
                times[which].append((time.perf_counter() - started) / requests * 1e6)
        with_us, without_us = statistics.median(times["with"]), statistics.median(times["without"])
        results[name] = {
            "with_us": round(with_us, 1),
            "without_us": round(without_us, 1),
            "added_us": round(with_us - without_us, 1),
            "ratio": round(with_us / without_us, 3),
        }
        print(
            f"{name}: {with_us:.1f} µs with the middleware, {without_us:.1f} µs without "
            f"(+{with_us - without_us:.1f} µs, {with_us / without_us:.2f}x)"
        )
    for app in apps.values():
        await app.state.bench_manager.__aexit__(None, None, None)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # the access log as a server writes it (text, info), into /dev/null rather than a terminal
    configure_logging("info", "text")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115
    results = asyncio.run(_run(args.requests, args.rounds))
    if args.json:
        write_json(args.json, {"requests": args.requests, "rounds": args.rounds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

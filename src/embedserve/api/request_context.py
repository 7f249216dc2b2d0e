"""Each request's id, deadline and timings: ``x-request-id``, TEI's timing headers, the access
log line and the request metrics.

The outermost middleware. It makes the request's :class:`~embedserve.context.RequestContext`
(the registry and batcher below fill in its timings) and, on the way out, adds to the response:

    x-request-id          the client's own when it sent a sane one (1-128 of A-Z a-z 0-9 . _ : -), else a new one
    x-total-time          milliseconds from arrival to the response (TEI's headers: whole ms)
    x-compute-time        the same, as TEI sends it
    x-tokenization-time   milliseconds spent tokenizing (requests that reached a model)
    x-queue-time          milliseconds its inputs waited in the model's queue
    x-inference-time      milliseconds of the forward passes that computed them
    x-compute-tokens      tokens the model computed
    x-cache-hits          inputs answered from the embedding cache (requests that looked it up)
    x-cache-lookups       inputs looked up in it (one per input and model: a fusion rerank looks up twice)
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import context
from embedserve.api.errors import matched_route
from embedserve.metrics import Metrics

access_log = logging.getLogger("embedserve.access")
_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, timeout: float, metrics: Metrics | None = None) -> None:
        self.app = app
        self.timeout = timeout
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = context.RequestContext(_request_id(scope))
        if self.timeout > 0:
            ctx.deadline = time.monotonic() + self.timeout
        token = context.current.set(ctx)
        status = 0  # until a response starts
        route: Any = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")  # set while the route handles the request, gone after
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", ctx.id)
                total = _ms(time.perf_counter() - ctx.started)
                headers.append("x-total-time", total)
                if ctx.tokens or ctx.tokenization:
                    headers.append("x-compute-time", total)
                    headers.append("x-tokenization-time", _ms(ctx.tokenization))
                    headers.append("x-queue-time", _ms(ctx.queue))
                    headers.append("x-inference-time", _ms(ctx.inference))
                    headers.append("x-compute-tokens", str(ctx.tokens))
                if ctx.cache_lookups:
                    headers.append("x-cache-hits", str(ctx.cache_hits))
                    headers.append("x-cache-lookups", str(ctx.cache_lookups))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if not status:  # no response: the client went away first (499, as nginx logs it), or the app raised
                status = 499 if ctx.client_gone else 500
            self._record(
                scope, ctx, status, route or matched_route(scope)
            )  # still inside the context: the log line has the request id
            context.current.reset(token)

    def _record(self, scope: Scope, ctx: context.RequestContext, status: int, matched: Any) -> None:
        elapsed = time.perf_counter() - ctx.started
        route = getattr(matched, "path_format", None) or "(unmatched)"
        if self.metrics is not None:
            self.metrics.request(route, scope["method"], ctx.model, status, elapsed, ctx.queue)
        access_log.info(
            "%s %s %d %.1f ms",
            scope["method"],
            scope["path"],
            status,
            elapsed * 1000,
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "model": ctx.model,
            },
        )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SANE_ID.fullmatch(value):
            return str(value.decode("ascii"))
    # 128 random bits from Python's generator (seeded from os.urandom, again in a forked child):
    # unique like uuid4().hex (an id, not a secret), without a system call a request
    return f"{random.getrandbits(128):032x}"

"""Shutdown under any load: every request in flight at SIGTERM gets its answer or a clean 503.

On SIGTERM uvicorn stops accepting connections and waits for the requests in flight, then
cancels whatever is left, and a cancelled request is answered with a text 500 and a logged
traceback. So :class:`GracefulServer` starts a :class:`Drain` as the shutdown begins: requests
may finish for ``grace`` seconds; at ``grace`` the drain cancels those still running (queued,
tokenizing, waiting for a body) and :class:`ShutdownGuard` answers each with a 503 in its
route's dialect. uvicorn's own cancellation, a few seconds later, is only a backstop.

Only POST requests are guarded: the others (probes, model info) answer at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.api.errors import Problem, render_scope

log = logging.getLogger(__name__)
BACKSTOP = 5  # seconds after the grace at which uvicorn cancels what the drain has not answered
MESSAGE = "the server is shutting down; retry the request (on another instance)"


class Drain:
    """The requests a shutdown may cancel, and whether their grace has run out."""

    def __init__(self) -> None:
        self.expired = False
        self.tasks: set[asyncio.Task[None]] = set()

    def begin(self, grace: float) -> None:
        """Start the grace period (on the event loop): its end cancels the requests still running."""
        asyncio.get_running_loop().call_later(grace, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.tasks:
            log.warning("shutdown grace over: answering %d request(s) still running with 503", len(self.tasks))
        for task in list(self.tasks):
            task.cancel("shutdown grace over")


class ShutdownGuard:
    """Answers a request that the drain cancelled with 503, in its route's dialect."""

    def __init__(self, app: ASGIApp, *, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or scope["method"] != "POST" or task is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        self.drain.tasks.add(task)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not self.drain.expired or started:
                raise
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is handled here
                task.uncancel()
            problem = Problem(503, MESSAGE, code="shutting_down", headers={"Retry-After": "1"})
            await render_scope(scope, problem)(scope, receive, send)
        finally:
            self.drain.tasks.discard(task)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose shutdown starts ``drain`` with ``grace`` seconds."""

    def __init__(self, config: uvicorn.Config, *, drain: Drain, grace: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace = grace

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.begin(self.grace)
        await super().shutdown(sockets)

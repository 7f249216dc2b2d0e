"""Cancel a request's work when its client goes away.

Starlette does not cancel a handler whose client disconnected, so a client that gives up
would still have its texts computed. Once the app has read a POST's whole body, this ASGI
middleware listens on ``receive`` for ``http.disconnect`` (one watcher task) and cancels the
request's task if it comes before the response starts. The batcher sees the
cancellation and drops the request's queued inputs before they reach the model. The request's
context records that the client went away, so the access log and the metrics say 499 (as nginx
does), not 500.

Only POST requests carry work worth cancelling. The others (``/health``, ``/ready``,
``/metrics``, model info) answer at once and pass straight through: the watcher would cost a
probe another turn of an event loop that may be busy handing out a finished pass's responses.

Served by ``embedserve serve``, no watcher task is needed: the connection (``api/connections``)
puts a :class:`Disconnect` in the request's scope (``DISCONNECT``), and calls what is set on it
when the connection is lost before the response is complete. The watcher, a task a request
that takes two turns of the event loop, is for servers that do not (in-process apps, Ray).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import context

DISCONNECT = "embedserve.disconnect"  # the scope's key of a request's Disconnect, where the server gives one


class Disconnect:
    """Set by the server in a request's scope: ``callback``, when set, is called (on the event loop)
    if the request's connection is lost before its response is complete."""

    __slots__ = ("callback",)

    def __init__(self) -> None:
        self.callback: Callable[[], None] | None = None

    def lost(self) -> None:
        callback, self.callback = self.callback, None
        if callback is not None:
            callback()


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or scope["method"] != "POST" or task is None:
            await self.app(scope, receive, send)
            return
        watcher: asyncio.Task[None] | None = None
        hook: Disconnect | None = scope.get(DISCONNECT)
        ctx = context.current.get()
        responded = gone = watching = False

        def went_away() -> None:
            nonlocal gone
            if not responded:
                gone = True
                if ctx is not None:
                    ctx.client_gone = True
                task.cancel()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    went_away()
                    return

        async def wrapped_receive() -> Message:
            nonlocal watcher, watching
            message = await receive()
            if message["type"] == "http.disconnect":
                return message
            if not message.get("more_body", False) and not watching:  # the body is read: next comes the disconnect
                watching = True
                if hook is not None:
                    hook.callback = went_away
                else:
                    watcher = asyncio.create_task(watch())
            return message

        async def wrapped_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        try:
            await self.app(scope, wrapped_receive, wrapped_send)
        except asyncio.CancelledError:
            if not gone or task.cancelling() > 1:  # cancelled by someone else too (shutdown): pass it on
                raise
            task.uncancel()  # the client went away: there is nobody to answer
        finally:
            if hook is not None:
                hook.callback = None
            if watcher is not None:
                watcher.cancel()

"""Cancel a request's work when its client goes away.

Starlette does not cancel a handler whose client disconnected, so a client that gives up
would still have its texts computed. This ASGI middleware runs each HTTP request as a task;
once the app has read the whole body, it listens on ``receive`` for ``http.disconnect`` and
cancels the task if it comes before the response is complete. The batcher sees the
cancellation and drops the request's queued inputs before they reach the model. The request's
context records that the client went away, so the access log and the metrics say 499 (as nginx
does), not 500.

Only POST requests carry work worth cancelling. The others (``/health``, ``/ready``,
``/metrics``, model info) answer at once and pass straight through: the two tasks this takes
would cost a probe two more turns of an event loop that may be busy handing out a finished
pass's responses.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import context


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        responded = False

        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()
            return message

        async def wrapped_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.start":
                responded = True
            await send(message)

        async def run_app() -> None:
            await self.app(scope, wrapped_receive, wrapped_send)

        app_task = asyncio.create_task(run_app())

        async def watch() -> None:
            await body_read.wait()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not responded:
                        ctx = context.current.get()
                        if ctx is not None:
                            ctx.client_gone = True
                        app_task.cancel()
                    return

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.shield(app_task)
        except asyncio.CancelledError:
            if not app_task.done():  # we were cancelled ourselves (shutdown): pass it on
                app_task.cancel()
                raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

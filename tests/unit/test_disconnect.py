"""The cancel-on-disconnect middleware: a POST whose client goes away is cancelled, the rest pass straight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from embedserve.api.disconnect import DISCONNECT, CancelOnDisconnect, Disconnect

pytestmark = pytest.mark.anyio


async def call(method: str, hook: Disconnect | None = None) -> int:
    """Run the middleware on one request whose client stays; the tasks running when the app ran
    (``hook``: the server's Disconnect in the scope)."""
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await asyncio.sleep(0)  # a watcher started for the body's end has run once
        seen.append(len(asyncio.all_tasks()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    messages = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> Message:
        try:
            return next(messages)
        except StopIteration:
            await asyncio.sleep(3600)  # no disconnect: the client stays
            raise AssertionError("unreachable") from None

    async def send(message: Message) -> None:
        return None

    before = len(asyncio.all_tasks())
    scope = {"type": "http", "method": method, "path": "/", **({DISCONNECT: hook} if hook is not None else {})}
    await CancelOnDisconnect(app)(scope, receive, send)
    return seen[0] - before


async def test_a_post_is_watched_by_one_task() -> None:
    assert await call("POST") == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_other_methods_are_not_watched(method: str) -> None:
    assert await call(method) == 0


async def test_a_cancel_from_outside_is_passed_on() -> None:
    """A request cancelled by someone else (the shutdown drain) ends cancelled, not quietly."""
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        started.set()
        await asyncio.sleep(3600)

    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.sleep(3600)  # the client stays
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}
    task = asyncio.create_task(CancelOnDisconnect(app)(scope, receive, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _held(disconnect_read: bool) -> tuple[Any, Receive, Send, asyncio.Event]:
    """An app that reads its body and then works until cancelled (``started`` once it works), and
    its client: after the body, the disconnect (``disconnect_read``), or nothing to read at all."""
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        started.set()
        await asyncio.sleep(3600)  # the work the disconnect cancels

    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        if not disconnect_read:
            raise AssertionError("the middleware does not read again: the server calls the hook")
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent to a client that went away")

    return app, receive, send, started


async def test_a_client_gone_before_the_response_is_logged_499(caplog: pytest.LogCaptureFixture) -> None:
    """A disconnect cancels the work; the access log and the metrics say 499, not 500 (nothing failed)."""
    from embedserve.api.request_context import RequestContextMiddleware

    app, receive, send, _ = _held(disconnect_read=True)
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}
    with caplog.at_level("INFO", logger="embedserve.access"):
        await RequestContextMiddleware(CancelOnDisconnect(app), timeout=0)(scope, receive, send)
    assert [r.status for r in caplog.records if r.name == "embedserve.access"] == [499]  # type: ignore[attr-defined]


async def test_with_the_servers_disconnect_no_task_watches_and_its_call_cancels_the_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Served by ``embedserve serve`` the connection says when it is lost (api/connections): no
    watcher task; the call cancels the work as a disconnect would, logged 499."""
    from embedserve.api.request_context import RequestContextMiddleware

    hook = Disconnect()
    assert await call("POST", hook) == 0 and hook.callback is None  # let go once the request ended

    app, receive, send, started = _held(disconnect_read=False)
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": [], DISCONNECT: hook}
    with caplog.at_level("INFO", logger="embedserve.access"):
        served = asyncio.create_task(RequestContextMiddleware(CancelOnDisconnect(app), timeout=0)(scope, receive, send))
        await started.wait()
        hook.lost()  # the connection is lost
        await served
    assert [r.status for r in caplog.records if r.name == "embedserve.access"] == [499]  # type: ignore[attr-defined]
    hook.lost()  # again (a later connection_lost): nothing is set, nothing happens

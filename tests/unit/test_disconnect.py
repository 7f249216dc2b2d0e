"""The cancel-on-disconnect middleware: a POST whose client goes away is cancelled, the rest pass straight."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from embedserve.api.disconnect import CancelOnDisconnect

pytestmark = pytest.mark.anyio


async def call(method: str) -> int:
    """Run the middleware on one request whose client stays; the tasks running when the app ran."""
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
    await CancelOnDisconnect(app)({"type": "http", "method": method, "path": "/"}, receive, send)
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


async def test_a_client_gone_before_the_response_is_logged_499(caplog: pytest.LogCaptureFixture) -> None:
    """A disconnect cancels the work; the access log and the metrics say 499, not 500 (nothing failed)."""
    from embedserve.api.request_context import RequestContextMiddleware

    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        started.set()
        await asyncio.sleep(3600)  # the work the disconnect cancels

    messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent to a client that went away")

    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}
    with caplog.at_level("INFO", logger="embedserve.access"):
        await RequestContextMiddleware(CancelOnDisconnect(app), timeout=0)(scope, receive, send)
    assert [r.status for r in caplog.records if r.name == "embedserve.access"] == [499]  # type: ignore[attr-defined]

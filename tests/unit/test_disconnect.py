"""The cancel-on-disconnect middleware: POST requests run as a task of their own, the rest pass straight."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from embedserve.api.disconnect import CancelOnDisconnect

pytestmark = pytest.mark.anyio


async def call(method: str) -> asyncio.Task[object] | None:
    """Run the middleware on one request; the task the app ran in."""
    seen: list[asyncio.Task[object] | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(asyncio.current_task())
        await receive()
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

    await CancelOnDisconnect(app)({"type": "http", "method": method, "path": "/"}, receive, send)
    return seen[0]


async def test_a_post_runs_as_a_task_of_its_own() -> None:
    assert await call("POST") is not asyncio.current_task()


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
async def test_other_methods_run_in_the_callers_task(method: str) -> None:
    assert await call(method) is asyncio.current_task()


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

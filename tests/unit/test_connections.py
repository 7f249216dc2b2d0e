"""The probe's cycle, stepped in the read's own callback: uvicorn's protocol on a transport that records writes."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
import uvicorn

from embedserve.api import connections
from embedserve.api.connections import ConnectionLimits, GuardedHttpTools, guarded_protocol

pytestmark = pytest.mark.anyio


class Transport(asyncio.Transport):
    """What the protocol writes, in order; nothing reaches a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.written.append(b"".join(chunks))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    @property
    def data(self) -> bytes:
        return b"".join(self.written)


class App:
    """``/health`` answers at once unless ``hold`` is set (then it waits for it); anything else
    answers after a turn of the loop. Notes what each request saw."""

    def __init__(self) -> None:
        self.hold: asyncio.Event | None = None
        self.cancelled = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if scope["path"] != "/health":
            await asyncio.sleep(0)
        elif self.hold is not None:
            try:
                await self.hold.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


def connected(app: App) -> tuple[GuardedHttpTools, Transport]:
    config = uvicorn.Config(app, lifespan="off", log_level="warning")
    protocol = guarded_protocol(ConnectionLimits())(config, uvicorn.server.ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_health_is_answered_inside_the_read_that_brought_it() -> None:
    protocol, transport = connected(App())
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert transport.data.startswith(b"HTTP/1.1 200 OK\r\n") and transport.data.endswith(b"/health")
    assert not protocol.tasks  # no task was needed
    transport.written.clear()
    protocol.data_received(b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert transport.data.startswith(b"HTTP/1.1 200 OK\r\n")
    protocol.connection_lost(None)


async def test_other_requests_start_as_tasks_on_the_next_turn() -> None:
    protocol, transport = connected(App())
    protocol.data_received(b"POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
    protocol.data_received(b"")  # nothing more: still nothing answered
    assert transport.data == b"" and len(protocol.tasks) == 1
    await asyncio.gather(*protocol.tasks)
    assert transport.data.endswith(b"/health")
    transport.written.clear()
    protocol.data_received(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert transport.data == b""
    await asyncio.gather(*protocol.tasks)
    assert transport.data.endswith(b"/v1/models")
    protocol.connection_lost(None)


async def test_a_probe_that_waits_goes_on_in_a_task_and_can_be_cancelled() -> None:
    app = App()
    app.hold = asyncio.Event()
    protocol, transport = connected(app)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert transport.data == b"" and len(protocol.tasks) == 1
    app.hold.set()
    await asyncio.gather(*protocol.tasks)
    assert transport.data.endswith(b"/health") and not protocol.tasks

    app.hold = asyncio.Event()  # waiting again, and cancelled (uvicorn's shutdown cancels its tasks)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    [task] = protocol.tasks
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert app.cancelled
    protocol.connection_lost(None)


async def test_a_probe_behind_another_request_on_its_connection_waits_its_turn() -> None:
    protocol, transport = connected(App())
    protocol.data_received(
        b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    assert transport.data == b""  # the first request's task has not run: the probe is queued behind it
    for _ in range(20):
        await asyncio.sleep(0)
        if transport.data.endswith(b"/health"):
            break
    assert transport.data.index(b"/v1/models") < transport.data.index(b"/health")
    protocol.connection_lost(None)


async def test_requests_read_and_not_yet_answered_are_counted_across_connections() -> None:
    held = App()
    held.hold = asyncio.Event()  # its /health waits until set
    first, _ = connected(App())
    second, _ = connected(held)
    assert not connections.one_request_in_progress()
    first.data_received(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert connections.one_request_in_progress()  # read, its task not started yet: counted
    second.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert not connections.one_request_in_progress()  # two
    await asyncio.gather(*first.tasks)
    assert connections.one_request_in_progress()  # the first answered, the second waits
    second.connection_lost(None)  # the second's client went away: nobody to answer
    assert connections._in_progress == 0
    held.hold.set()
    await asyncio.gather(*second.tasks)
    assert connections._in_progress == 0
    first.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")  # answered within the read
    assert connections._in_progress == 0
    first.connection_lost(None)


async def test_past_a_turns_share_requests_start_on_later_turns_in_order_and_a_probe_does_not_wait() -> None:
    apps = [App() for _ in range(connections.START_PER_TURN + 5)]
    connected_all = [connected(app) for app in apps]
    for i, (protocol, _) in enumerate(connected_all):
        protocol.data_received(b"GET /v1/models/%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i)
    started = [i for i, (protocol, _) in enumerate(connected_all) if protocol.tasks]
    assert started == list(range(connections.START_PER_TURN))  # the rest wait, in the order they came

    probe, probe_transport = connected(App())
    probe.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert probe_transport.data.endswith(b"/health")  # answered in its read, ahead of the waiting requests

    gone, _ = connected_all[-1]
    gone.connection_lost(None)  # its client left while it waited: it never starts
    await asyncio.sleep(0)  # the next turn: the waiting requests start
    assert all(protocol.tasks for protocol, _ in connected_all[:-1]) and not gone.tasks
    for protocol, transport in connected_all[:-1]:
        await asyncio.gather(*protocol.tasks)
        assert transport.data.endswith(b"/v1/models/%d" % connected_all.index((protocol, transport)))
    assert connections._in_progress == 0
    for protocol, _ in connected_all[:-1]:
        protocol.connection_lost(None)
    probe.connection_lost(None)


async def test_a_connection_lost_before_the_response_calls_its_requests_disconnect() -> None:
    from embedserve.api.disconnect import DISCONNECT, Disconnect

    app = App()
    app.hold = asyncio.Event()
    protocol, _ = connected(app)
    protocol.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")  # held: no response yet
    assert protocol.cycle is not None
    hook = protocol.cycle.scope[DISCONNECT]  # type: ignore[literal-required]
    assert isinstance(hook, Disconnect)
    calls: list[int] = []
    hook.callback = lambda: calls.append(1)
    protocol.connection_lost(None)
    assert calls == [1]
    for task in protocol.tasks:
        task.cancel()

    answered, _ = connected(App())
    answered.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")  # answered at once
    assert answered.cycle is not None and answered.cycle.response_complete
    done = answered.cycle.scope[DISCONNECT]  # type: ignore[literal-required]
    done.callback = lambda: calls.append(2)
    answered.connection_lost(None)
    assert calls == [1]  # its response was complete: nothing to cancel


async def test_reading_resumes_once_a_large_body_is_complete_so_a_lost_connection_is_noticed() -> None:
    """uvicorn stops reading while a body past its high-water mark waits for the app; with no
    watcher calling receive() again, the connection resumes reading itself once the body is whole
    (else the client's close would go unread, and its request's work on)."""
    from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

    app = App()
    app.hold = asyncio.Event()
    protocol, transport = connected(app)
    body = b"x" * (HIGH_WATER_LIMIT + 100)
    head = b"POST /v1/embeddings HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body)
    protocol.data_received(head + body[:-10])
    assert transport.paused  # past the high-water mark, the body not yet whole: uvicorn waits for the app
    protocol.data_received(body[-10:])
    assert not transport.paused and not protocol.flow.read_paused
    protocol.connection_lost(None)
    for task in protocol.tasks:
        task.cancel()


async def test_an_answered_request_is_freed_by_reference_counting_not_left_for_the_collector() -> None:
    """Its cycle and the transport wrapper that holds the head (HeadWithBody) form no reference
    cycle: under a flood, cycles promoted while requests wait set off full collections."""
    protocol, transport = connected(App())
    gc.disable()
    try:
        protocol.data_received(b"POST /v1/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        assert protocol.cycle is not None
        cycle = weakref.ref(protocol.cycle)
        await asyncio.gather(*protocol.tasks)
        assert transport.data.startswith(b"HTTP/1.1 200 OK\r\n") and transport.data.endswith(b"/v1/x")
        assert len(transport.written) == 1  # head and body in one write
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")  # the next request's cycle
        await asyncio.sleep(0)  # the finished task lets go of its coroutine
        assert cycle() is None
    finally:
        gc.enable()
        protocol.connection_lost(None)

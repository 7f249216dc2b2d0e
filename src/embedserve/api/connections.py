"""Connection limits: what uvicorn's HTTP/1.1 protocol (httptools) does not bound by itself.

uvicorn closes a keep-alive connection that waits too long for its next request
(``timeout_keep_alive``, our ``idle_timeout``), but nothing else: a connection that never sends
a request, one that trickles its headers (slowloris) or its body, and a header of any size are
all kept, and enough silent sockets use up the process's file descriptors until even ``/health``
is refused. :func:`guarded_protocol` makes uvicorn's protocol class with these limits added:

    header_timeout     a request's line and headers must be complete within this many seconds
                       of the connection opening (or of the request's first byte): else 408
    min_body_rate      after ``header_timeout`` seconds, a body must have arrived at this many
                       bytes a second on average: else 408 (time the server itself stops reading,
                       because the app has not taken what came, is not counted)
    max_header_bytes   the request line and headers together: past it 431, without parsing more
    max_connections    open connections; one more closes the connection idle the longest (no
                       request in progress), so a flood of silent sockets cannot lock out a probe

These answers (and the 400 for a request the parser refuses) are JSON in OpenAI's error shape,
as the router's 404 is; the connection is closed after them.

One write a response: uvicorn writes a response's head as soon as the app starts it, and its
body in a second write, so every response costs two system calls and reaches the client as two
TCP segments (the socket has Nagle's algorithm off), waking the client's reader twice.
:class:`HeadWithBody` holds the head until the body's first bytes and hands both to the socket
together (``writelines``: one ``writev`` on uvloop). Bytes reach the client in the same order; a
``HEAD`` response (no body follows) and ``100 Continue`` are written at once.

A probe first: ``GET /health`` (and ``HEAD``) is answered as soon as its bytes are read. uvicorn
starts every request as a task, whose first step runs on the event loop's next turn, after every
task already waiting to run: under load, the request tasks started from the same reads and the
responses of a finished pass, tens of milliseconds. The probe's cycle is instead stepped at once,
in the read's own callback, once the read is parsed (its request is complete then, and
``/health`` is answered before routing, never waiting on anything): it runs to its end there,
and the rare step that does wait (a client not reading its answers) goes on in a task.

At most ``START_PER_TURN`` requests start a turn of the event loop. uvicorn starts a request's
task in the read that completes it, and asyncio runs every task started in one turn's reads in
the next turn, before it reads again: under a flood that next turn runs hundreds of requests
(each refused or routed in one step) and every probe that arrives meanwhile waits for all of
them. So the requests past ``START_PER_TURN`` in a turn wait in a queue of this process, in the
order they came, and start ``START_PER_TURN`` a turn after it: between two turns the loop reads
again, and a probe is answered within a turn's worth of requests. A server under its normal load
(a pass answers a handful of requests, and their clients send a handful more) never fills a turn.

A request's scope carries a :class:`~embedserve.api.disconnect.Disconnect`, which the
connection calls when it is lost before the request's response is complete: the request's work
is cancelled without a task of its own watching for the disconnect (``api/disconnect``).

The requests read and not yet answered, on every connection of this process, are counted
(:func:`one_request_in_progress`): the batcher runs a lone short input on the event loop only
when its request is the one request in progress (batching.py). Counted from the moment a
request's headers are parsed, a request whose task has not started yet counts as much as one
being computed. Served other ways (in-process, a Ray replica), no request is counted, and none
ever runs on the event loop.

Without API keys, the ``Host`` header must name this server (against DNS rebinding: a web page
whose own name is made to resolve to 127.0.0.1 would otherwise reach a loopback server from a
browser): one of ``allowed_hosts``, or, on a loopback address, ``localhost``, ``127.0.0.1`` and
``[::1]``; on another address with no ``allowed_hosts``, any name. Else 400, as Django does.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import json
import logging
import os
import resource
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from embedserve.api.disconnect import DISCONNECT, Disconnect
from embedserve.errors import clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of :mod:`connections`, from the settings of the same names."""

    header_timeout: float = 10.0
    min_body_rate: int = 1024
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000
    allowed_hosts: tuple[str, ...] | None = None  # None: no Host check (API keys are set)


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (at most 65,536): the
    default soft limit of many systems (1,024) is less than the connections a server should hold.
    Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 65_536) if hard != resource.RLIM_INFINITY else 65_536
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


_room: tuple[int, int] = (-1, 0)  # (the soft limit on open files, the connections it leaves room for)


def _fd_room(connections: int) -> int:
    """Connections the limit on open files leaves room for, besides the files the process holds
    for itself (models, logs, pipes). Counted again only when the limit changes."""
    global _room
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    if soft != _room[0]:
        try:
            own = len(os.listdir("/proc/self/fd")) - connections
        except OSError:
            own = 128
        _room = (soft, max(16, soft - own - 64))
    return _room[1]


def error_bytes(status: int, message: str, code: str) -> bytes:
    """A complete ``Connection: close`` response with an OpenAI-shaped JSON error body."""
    kind = "invalid_request_error" if status < 500 else "service_unavailable"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = [
        STATUS_LINE[status],
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@functools.lru_cache(maxsize=64)  # the server's own addresses: a few, asked on every request
def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def _host_name(host: str) -> str:
    """``Host``'s name, without its port and IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _wrong_host(scope: Scope, receive: Receive, send: Send) -> None:
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
    message = (
        f"the Host header '{clip(host, 80)}' does not name this server; "
        "set EMBEDSERVE_ALLOWED_HOSTS to the names clients use"
    )
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "host_not_allowed"}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HeadWithBody:
    """A request cycle's transport: the response's head is held until the first write after it
    (the body's first bytes; ``close`` too) and goes out in the same call (module docstring).

    It knows its cycle through a weak reference: the cycle holds it as its transport, and a
    strong reference back would make each request a reference cycle, which only the garbage
    collector frees. Under a flood of thousands of connections those cycles set off full
    collections every few seconds, each holding the event loop for a hundred milliseconds."""

    __slots__ = ("_cycle", "_head", "_may_hold", "transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self.transport = transport
        self._cycle = weakref.ref(cycle)
        self._head: bytes | None = None
        self._may_hold = cycle.scope["method"] != "HEAD"  # until a head has been held (one a response)

    def write(self, data: bytes) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self.transport.writelines((head, data))
        elif self._may_hold and (cycle := self._cycle()) is not None and cycle.response_started:
            self._head, self._may_hold = data, False  # the head: the cycle set response_started before writing it
        else:
            self.transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self.transport.write(head)

    def close(self) -> None:
        self._flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


_in_progress = 0  # requests read and not yet answered, on every GuardedHttpTools connection


def one_request_in_progress() -> bool:
    """Whether the server holds exactly one request read and not yet answered (the asker's own)."""
    return _in_progress == 1


PROBE_PATHS = frozenset({"/health"})  # answered before routing (api/shed.py): their cycles never wait
START_PER_TURN = 16  # request tasks started in one turn of the event loop (module docstring)


class _Starts:
    """The request tasks of one event loop waiting to start, ``START_PER_TURN`` a turn, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started = 0  # tasks started in this turn
        self.waiting: deque[Callable[[], None]] = deque()
        self._turn_ends = False  # the callback that ends this turn is scheduled

    def start(self, begin: Callable[[], None]) -> None:
        """``begin`` (start a request's task) now, or in a later turn when this one has started enough."""
        if not self._turn_ends:
            self._turn_ends = True
            self.loop.call_soon(self._next_turn)
        if self.waiting or self.started >= START_PER_TURN:
            self.waiting.append(begin)
        else:
            self.started += 1
            begin()

    def _next_turn(self) -> None:
        """At the next turn (after the loop has read again): the next requests waiting start."""
        self._turn_ends, self.started = False, 0
        while self.waiting and self.started < START_PER_TURN:
            self.started += 1
            self.waiting.popleft()()
        if self.started:  # this turn started some: it ends at the next, like any other
            self._turn_ends = True
            self.loop.call_soon(self._next_turn)


_starts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Starts] = weakref.WeakKeyDictionary()


def _starts_of(loop: asyncio.AbstractEventLoop) -> _Starts:
    starts = _starts.get(loop)
    if starts is None:
        starts = _starts[loop] = _Starts(loop)
    return starts


class _Resumed:
    """The rest of a coroutine already stepped once (it yielded ``first``), to be awaited by a task:
    each value or exception the task sends goes on into the coroutine."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, None]:
        pending = self.first
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # thrown in by the task: a cancellation
                step = functools.partial(self.coro.throw, exc)
            else:
                step = functools.partial(self.coro.send, sent)
            try:
                pending = step()
            except StopIteration:
                return


async def _carry_on(coro: Coroutine[Any, Any, None], first: Any) -> None:
    await _Resumed(coro, first)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of this module (``limits``: set by
    :func:`guarded_protocol` on a subclass)."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its end may span two reads
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_bytes = 0
        self._body_paused = 0.0  # seconds the server itself stopped reading this body
        self.last_active = time.monotonic()
        self._unanswered = 0  # this connection's requests read and not yet answered (pipelined ones too)
        self._reading = False  # in data_received: a probe's cycle waits for the read to be parsed
        self._probe: tuple[RequestResponseCycle, ASGI3Application] | None = None

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()
        cap = min(self.limits.max_connections, _fd_room(len(self.connections)))
        if len(self.connections) > cap:
            self._evict_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._answered(self._unanswered)  # the client will not read them now
        super().connection_lost(exc)
        if self.cycle is not None and not self.cycle.response_complete:
            hook = self.cycle.scope.get(DISCONNECT)
            if isinstance(hook, Disconnect):
                hook.lost()  # api/disconnect: the request's work is cancelled

    def _asked(self) -> None:
        global _in_progress
        self._unanswered += 1
        _in_progress += 1

    def _answered(self, requests: int = 1) -> None:
        global _in_progress
        requests = min(requests, self._unanswered)
        self._unanswered -= requests
        _in_progress -= requests

    def on_response_complete(self) -> None:
        self._answered()
        super().on_response_complete()

    def _evict_idle(self) -> None:
        """Close the connection idle the longest; failing that, the one that has been sending its body
        the longest (503); failing that (every connection has a request the app is working on), this one."""
        others = [c for c in self.connections if c is not self and isinstance(c, GuardedHttpTools)]
        idle = [c for c in others if c.is_idle()]
        sending = [c for c in others if c.is_sending_body()]
        log.warning("open connections past the limit (%d): closing one", len(self.connections))
        if idle:
            victim = min(idle, key=lambda c: c.last_active)
            victim.transport.close()
        elif sending:
            victim = min(sending, key=lambda c: c._body_started)
            victim._refuse(503, "the server has too many open connections (EMBEDSERVE_MAX_CONNECTIONS)", "overloaded")
        else:
            victim = self
            victim.transport.close()
        self.connections.discard(victim)  # gone now, though connection_lost comes on a later turn

    def is_idle(self) -> bool:
        """No request in progress: between requests, or still sending a request's head."""
        return self.cycle is None or self.cycle.response_complete

    def is_sending_body(self) -> bool:
        """A request whose head has come and whose body is still arriving."""
        return self._body_timer is not None

    # reading

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._in_head and not self._count_head(data):
            return
        self._reading = True
        try:
            super().data_received(data)
        finally:
            self._reading = False
        if self._probe is not None:
            (cycle, app), self._probe = self._probe, None
            self._run_at_once(cycle, app)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        scope = cycle.scope
        if self._reading and scope["path"] in PROBE_PATHS and scope["method"] in ("GET", "HEAD"):
            self._probe = (cycle, app)  # stepped once this read is parsed (module docstring)
        else:
            _starts_of(self.loop).start(functools.partial(self._start_task, cycle, app))

    def _start_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if cycle.disconnected:
            return  # its client went away while it waited to start: nobody to answer (counted in connection_lost)
        super()._start_asgi_task(cycle, app)

    def _run_at_once(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        """Step the cycle now, in a context of its own, as its task's first step would; a task
        carries on from where it waits, if it does."""
        context = contextvars.Context()
        coro = cycle.run_asgi(app)
        try:
            first = context.run(coro.send, None)
        except StopIteration:
            return  # answered
        task = self.loop.create_task(_carry_on(coro, first), context=context)
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _count_head(self, data: bytes) -> bool:
        """Count the head's bytes; False (and a 431) once past ``max_header_bytes``."""
        window = self._tail + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._head_bytes += len(data)
            self._tail = window[-3:]
            size = self._head_bytes
        else:
            size = self._head_bytes + end - len(self._tail) + 4
            self._in_head, self._head_bytes, self._tail = False, 0, b""
        if size <= self.limits.max_header_bytes:
            return True
        self._refuse(
            431,
            f"the request line and headers are larger than the limit of {self.limits.max_header_bytes} bytes "
            "(EMBEDSERVE_MAX_HEADER_BYTES)",
            "headers_too_large",
        )
        return False

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1", "invalid_http")

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` unless a response has started, and close the connection."""
        self._cancel_timers()
        if not self.transport.is_closing():
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(error_bytes(status, message, code))
            self.transport.close()

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        cycle = self.cycle
        if self._host_allowed():
            super().on_headers_complete()
        else:  # answered by a small ASGI app in place of ours, through uvicorn's own request cycle
            app, self.app = self.app, _wrong_host
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if self.cycle is not None and self.cycle is not cycle:  # a new request's cycle (not an upgrade)
            self.cycle.transport = HeadWithBody(self.transport, self.cycle)  # type: ignore[assignment]
            self.cycle.scope[DISCONNECT] = Disconnect()  # type: ignore[literal-required]
            self._asked()
        if self._has_body() and self.limits.min_body_rate > 0:
            self._body_started = time.monotonic()
            self._body_bytes, self._body_paused = 0, 0.0
            self._body_timer = self.loop.call_later(self.limits.header_timeout, self._check_body_rate)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        super().on_message_complete()
        # uvicorn pauses reading while a large body waits for the app, and only the app's next
        # receive() resumes it; a request watched through its Disconnect never calls receive()
        # again, so reading resumes here: a lost connection is then noticed (connection_lost)
        self.flow.resume_reading()

    def _host_allowed(self) -> bool:
        allowed = self.limits.allowed_hosts
        if allowed is None or "*" in allowed:
            return True
        local = self.server[0] if self.server else ""
        names = set(allowed)
        if _is_loopback(local):
            names |= LOOPBACK_NAMES
        elif not allowed:
            return True  # bound to a public address with no names given: any
        host = next((value for name, value in self.headers if name == b"host"), None)
        if host is None:
            return True  # HTTP/1.0 without Host: no browser sends that
        return _host_name(host.decode("latin-1")) in names

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"0", b"")
            if name == b"transfer-encoding":
                return True
        return False

    # timers

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.is_idle() and self._head_bytes == 0 and not self._tail:
            self.transport.close()  # sent nothing at all: nobody to answer
            return
        self._refuse(
            408,
            f"the request's headers did not arrive within {self.limits.header_timeout:g} s (EMBEDSERVE_HEADER_TIMEOUT)",
            "request_timeout",
        )

    def _check_body_rate(self) -> None:
        self._body_timer = None
        if self.flow.read_paused:  # the app has not taken what came: not the client's delay
            self._body_paused += 1.0
        else:
            elapsed = time.monotonic() - self._body_started - self._body_paused
            if self._body_bytes < self.limits.min_body_rate * elapsed:
                self._refuse(
                    408,
                    f"the request body arrived slower than {self.limits.min_body_rate} bytes a second "
                    "(EMBEDSERVE_MIN_BODY_RATE)",
                    "request_timeout",
                )
                return
        self._body_timer = self.loop.call_later(1.0, self._check_body_rate)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpTools]:
    """uvicorn's ``http`` protocol class with ``limits``."""
    return type("GuardedHttpTools", (GuardedHttpTools,), {"limits": limits})

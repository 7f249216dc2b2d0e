"""Request bodies within limits before anything parses them: size (413), JSON nesting, object
members and number length (422), and the encoding (400 for UTF-16 and UTF-32, which Python's
``json`` would otherwise accept).

The body is read here, chunk by chunk, and counted as it arrives: a ``Content-Length`` over the
limit is refused before a byte is read, and a chunked body (no length) is refused as soon as it
passes the limit, without reading the rest. A body within the limit is then checked for nesting
depth, and handed to the app in one piece (the app would have read it whole anyway).

The depth check costs nothing for ordinary requests: a body with fewer ``[`` and ``{`` than the
limit cannot nest deeper. Others have their strings blanked by one regular expression and the
brackets summed with numpy, both in C, so even a hostile body of many megabytes takes
milliseconds, where Python's ``json`` would recurse until it fails.
"""

from __future__ import annotations

import re

import numpy as np
from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve.api.asgi import replay
from embedserve.api.errors import Problem, render_scope
from embedserve.errors import clip

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[list(b"[{")] = 1
_OPEN[list(b"]}")] = -1
MAX_MEMBERS = 65_536  # object members in one body: a request has a handful, or one per document
MAX_DIGITS = 4300  # Python's limit on converting a decimal string to int (sys.get_int_max_str_digits)
_KEY_BEFORE = re.compile(rb'"((?:[^"\\]|\\.){0,100})"\s*:[^:]*$', re.DOTALL)


def json_members(body: bytes, limit: int) -> int:
    """About how many object members ``body`` has (its ``":`` and ``" :``, less the escaped quotes
    before a colon inside strings); any value up to ``limit`` when it has too few colons to exceed it."""
    if body.count(b":") <= limit:
        return 0
    return body.count(b'":') + body.count(b'" :') - body.count(b'\\":')


def _longest_digits(body: bytes) -> tuple[int, int]:
    """The start and length of the longest run of ASCII digits in ``body`` (numpy: linear, in C)."""
    data = np.frombuffer(body, dtype=np.uint8)
    digit = np.zeros(len(data) + 2, dtype=np.int8)
    digit[1:-1] = (data >= 0x30) & (data <= 0x39)
    edges = np.flatnonzero(np.diff(digit))
    if not len(edges):
        return 0, 0
    starts, stops = edges[0::2], edges[1::2]
    longest = int(np.argmax(stops - starts))
    return int(starts[longest]), int(stops[longest] - starts[longest])


def long_number(body: bytes) -> tuple[int, str | None] | None:
    """Where a number with more digits than Python's ``json`` converts starts, and the key it is
    the value of (or in), or ``None``. (A long run of digits inside a string is no number.)"""
    if len(body) <= MAX_DIGITS:
        return None
    if _longest_digits(body)[1] <= MAX_DIGITS:
        return None
    bare = _STRING.sub(b'""', body)
    start, length = _longest_digits(bare)
    if length <= MAX_DIGITS:
        return None
    start = body.find(bare[start : start + length])
    before = body[max(0, start - 4096) : start]
    key = _KEY_BEFORE.search(before)
    return start, key.group(1).decode("utf-8", "replace") if key else None


def not_utf8(body: bytes) -> bool:
    """A UTF-16 or UTF-32 body (a byte order mark, or the zero bytes of an ASCII first character)."""
    head = body[:4]
    return head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 2 and 0 in head[:2])


def json_depth(body: bytes, limit: int) -> int:
    """How deep arrays and objects nest in ``body`` (a JSON text); any value up to ``limit`` when the
    body has too few brackets to exceed it."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = _OPEN[np.frombuffer(brackets, dtype=np.uint8)].astype(np.int32)
    return int(np.cumsum(steps).max())


class BodyLimits:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        problem = self._check(body)
        if problem is not None:
            await render_scope(scope, problem)(scope, receive, send)
            return
        await self.app(scope, replay({"type": "http.request", "body": body, "more_body": False}, receive), send)

    def _check(self, body: bytes) -> Problem | None:
        """The first thing wrong with a body within the size limit, or ``None``."""
        if not_utf8(body):
            return Problem(400, "the request body must be JSON in UTF-8 (not UTF-16 or UTF-32)", code="invalid_body")
        if json_depth(body, self.max_depth) > self.max_depth:
            text = f"the request body nests arrays and objects deeper than {self.max_depth} levels"
            return Problem(422, text + " (EMBEDSERVE_MAX_JSON_DEPTH)", code="json_too_deep", unparsed=True)
        if json_members(body, MAX_MEMBERS) > MAX_MEMBERS:
            text = f"the request body has more than {MAX_MEMBERS} object members; no request needs that many"
            return Problem(422, text, code="too_many_fields", unparsed=True)
        number = long_number(body)
        if number is not None:
            at, key = number
            where = f" (in '{clip(key)}')" if key else ""
            text = f"request body is not valid JSON: a number at byte {at}{where} has more than {MAX_DIGITS} digits"
            return Problem(422, text, param=key, code="invalid_value", unparsed=True)
        return None

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than the limit of {self.max_bytes} bytes (EMBEDSERVE_MAX_BODY_BYTES)"
        await render_scope(scope, Problem(413, message, code="request_too_large"))(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

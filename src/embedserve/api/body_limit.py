"""Request bodies within limits before anything parses them: size (413) and JSON nesting (422).

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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve.api.errors import Problem, render_scope

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[list(b"[{")] = 1
_OPEN[list(b"]}")] = -1


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
        if json_depth(body, self.max_depth) > self.max_depth:
            text = f"the request body nests arrays and objects deeper than {self.max_depth} levels"
            problem = Problem(422, text + " (EMBEDSERVE_MAX_JSON_DEPTH)", code="json_too_deep", unparsed=True)
            await render_scope(scope, problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

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

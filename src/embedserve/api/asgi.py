"""Small ASGI helpers shared by the middleware: a header of the scope, a body handed on again."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), decoded as HTTP does (latin-1)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def replay(message: Message, receive: Receive) -> Receive:
    """``receive`` that gives ``message`` first (a body already read, handed on to the app)."""
    replayed = False

    async def replaying() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replaying

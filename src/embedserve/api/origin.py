"""Without API keys, a web page must not drive the server from a user's browser.

A browser sends any page's cross-site ``POST`` (a form, or ``fetch`` in ``no-cors`` mode) without
asking, and the server would act on it: unload a model, or compute for the page. So when no API
keys are set, a ``POST`` that carries an ``Origin`` header is refused (403) unless that origin
is this server's own (the playground's requests) or one of the CORS origins
(``EMBEDSERVE_CORS_ORIGINS``). Requests without ``Origin`` (curl, SDKs, other servers) are as
before. With API keys, a page cannot send the key, so nothing changes.

The ``Host`` check against DNS rebinding is in :mod:`connections`, where the server's own
address is known.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve.api.errors import Problem, render_scope
from embedserve.errors import clip


class OriginCheck:
    def __init__(self, app: ASGIApp, *, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1").rstrip("/").lower()
            elif name == b"host":
                host = value.decode("latin-1").lower()
        if origin is None or origin in self.allowed or "*" in self.allowed or origin == f"{scope['scheme']}://{host}":
            await self.app(scope, receive, send)
            return
        message = (
            f"requests from the web page at origin '{clip(origin, 80)}' are not allowed: add it to "
            "EMBEDSERVE_CORS_ORIGINS, or set API keys"
        )
        await render_scope(scope, Problem(403, message, code="origin_not_allowed"))(scope, receive, send)

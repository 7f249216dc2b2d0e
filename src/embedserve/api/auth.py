"""API keys: with keys set, every route but the public ones wants one.

A key comes as ``Authorization: Bearer <key>`` (what OpenAI, Cohere and TEI clients send) or
``x-api-key: <key>``. It is compared with every configured key in constant time
(``hmac.compare_digest``, no early exit), so the time taken says nothing about how close a guess
was. A missing or wrong key is a 401 in the dialect of the route asked for; the key sent is
never echoed or logged.

Public without a key: the front door (``GET /``), the docs and schema, the playground's static
page (it asks for the key itself), and, unless ``public_probes`` is off, ``/health``,
``/ready`` and ``/metrics``. CORS preflights are answered by the CORS middleware outside this one.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve.api.errors import problem_for, render_scope
from embedserve.errors import Unauthorized

PUBLIC = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/playground"})
PROBES = frozenset({"/health", "/ready", "/metrics"})
MISSING = "this server needs an API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
WRONG = "the API key sent is not valid for this server"


class APIKeyAuth:
    def __init__(self, app: ASGIApp, keys: Sequence[str], *, public_probes: bool = True) -> None:
        self.app = app
        self._keys = [k.encode("utf-8") for k in keys]
        self._public = PUBLIC | PROBES if public_probes else PUBLIC

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope):
            await self.app(scope, receive, send)
            return
        given = _sent_keys(scope)
        if given and any([self._valid(key) for key in given]):
            await self.app(scope, receive, send)
            return
        error = Unauthorized(WRONG if given else MISSING)
        await render_scope(scope, problem_for(error))(scope, receive, send)

    def _is_public(self, scope: Scope) -> bool:
        if scope["method"] not in ("GET", "HEAD"):
            return False
        path: str = scope["path"]
        return path in self._public or path.startswith("/playground/")

    def _valid(self, given: bytes) -> bool:
        ok = False
        for key in self._keys:  # every key, always: no early exit
            ok |= hmac.compare_digest(given, key)
        return ok


def _sent_keys(scope: Scope) -> list[bytes]:
    keys = []
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                keys.append(token.strip())
        elif name == b"x-api-key" and value.strip():
            keys.append(value.strip())
    return keys

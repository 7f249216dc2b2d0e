"""What HTTP tools and browsers expect beyond the API itself: ``HEAD`` wherever ``GET`` works, and
a Content-Security-Policy on the documentation pages.

FastAPI's routes answer ``HEAD`` with 405; load balancers and ``curl -I`` probe with it. A
``HEAD`` request is routed as a ``GET`` and its response body dropped (its headers, the
``content-length`` included, are the ``GET``'s).

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from cdn.jsdelivr.net (and
ReDoc its fonts from Google Fonts), as FastAPI's pages do; the policy says so, and allows nothing
else: no other script source, no frames, no form posts, requests only to this server.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_CSP = (
    "default-src 'none'; "
    "script-src https://cdn.jsdelivr.net 'unsafe-inline'; "  # the pages' inline script starts the UI
    "style-src https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'; "
    "font-src https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


class HeadAndDocsPolicy:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        docs = scope["path"] in DOCS_PATHS
        if not head and not docs:
            await self.app(scope, receive, send)
            return
        if head:
            scope = {**scope, "method": "GET"}

        async def adjusted_send(message: Message) -> None:
            if message["type"] == "http.response.start" and docs:
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"content-security-policy", DOCS_CSP.encode())],
                }
            elif message["type"] == "http.response.body" and head:
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, adjusted_send)

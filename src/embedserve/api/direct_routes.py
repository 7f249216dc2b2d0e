"""The compute routes called straight from embedserve's middleware, past Starlette's router.

Below embedserve's own middleware, each request passes Starlette's exception middleware,
FastAPI's exit-stack middleware, the router (in FastAPI 0.16x it tries each included router in
turn, then each of that router's routes), and the route's request-response wrapper (two exit
stacks and another exception wrapper) before its handler runs. A POST to a route whose endpoint
has a fast plan (:mod:`fast_route`) needs none of that: this middleware, the innermost of
embedserve's, finds the route by its path in a table made on the first request, validates the
body with the plan and calls the endpoint.

What those layers would have done for such a request, it does too:

- the scope gets the route, its endpoint and the (empty) path parameters, as the router sets them;
- an error the endpoint raises is answered by the app's handler for its class (or its HTTP
  status), found as Starlette finds it; errors with no such handler (the one for ``Exception``
  belongs to the outermost layer, Starlette's ``ServerErrorMiddleware``) go on up, as they did.

Everything else goes on to the router, body and all: other methods and paths, a mounted app
(a ``root_path``), a body that is not JSON or does not validate (FastAPI's 422, in the route's
dialect), a body not read whole, and every request while OpenTelemetry tracing is on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from embedserve.api.asgi import header, replay
from embedserve.api.errors import flat_routes
from embedserve.api.fast_route import BodyPlan, body_plan, takes_fast

Direct = tuple[APIRoute, BodyPlan]


class DirectRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: dict[str, Direct] | None = None  # path → its POST route and plan, made on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        direct = self._routes(scope).get(scope["path"])
        if direct is None or not takes_fast(header(scope, b"content-type")):
            await self.app(scope, receive, send)
            return
        route, plan = direct
        message = await receive()
        replayed = replay(message, receive)
        whole = message["type"] == "http.request" and not message.get("more_body", False)
        body = plan.parse(message.get("body", b"")) if whole else None
        if body is None:
            await self.app(scope, replayed, send)
            return
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, {}
        request = Request(scope, replayed, send)
        try:
            response = await plan.call(body, request)
        except Exception as exc:
            handler = _handler(scope, exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _routes(self, scope: Scope) -> dict[str, Direct]:
        if self._table is None:
            table: dict[str, Direct] = {}
            for route in flat_routes(getattr(scope.get("app"), "router", None)):
                if not isinstance(route, APIRoute) or "POST" not in (route.methods or ()) or route.param_convertors:
                    continue
                plan = body_plan(route)
                if plan is not None:
                    table.setdefault(route.path, (route, plan))  # the router takes the first that matches
            self._table = table
        return self._table


def _handler(scope: Scope, exc: Exception) -> Callable[..., Any] | None:
    """The app's handler for ``exc`` as Starlette's exception middleware finds it: by HTTP status,
    then by class; never the one for ``Exception`` or 500 (the outermost layer's)."""
    handlers: dict[Any, Callable[..., Any]] = getattr(scope.get("app"), "exception_handlers", {})
    if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None

"""A route class whose handler takes the common request straight to the endpoint.

Every compute route of embedserve takes its body as one pydantic model plus the ``Request`` (TEI's
also an optional ``X-Model`` header) and returns a ``Response``. FastAPI's own handler is built
for any endpoint, and each request pays for that: the content type parsed through the ``email``
package, the body decoded by ``json.loads`` and then validated as a dict, the parameters solved
through the dependency machinery. For a request with a JSON content type whose body validates,
this handler validates the bytes in one step (``model_validate_json``, pydantic's Rust JSON
parser, to the same model) and calls the endpoint.

Everything else goes to FastAPI's own handler, so the answer is FastAPI's: an empty body, another
content type, a body that does not parse or validate (the 422 naming the field comes from
FastAPI, rendered in the route's dialect as before), and every request while OpenTelemetry
tracing is on (FastAPI's spans for the body and the endpoint stay). A route whose endpoint
takes anything else (a query parameter, a dependency, a header that is not an optional string)
always uses FastAPI's handler.

``python bench/fast_route.py`` measures the two handlers side by side.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import fastapi.routing
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

try:  # FastAPI 0.165+: get_telemetry_data() is the request's data for OpenTelemetry, None when tracing is off
    from fastapi import telemetry as _telemetry
except ImportError:  # pragma: no cover - older FastAPI has no native telemetry
    _telemetry = None  # type: ignore[assignment]


def _traced() -> bool:
    return _telemetry is not None and _telemetry.get_telemetry_data() is not None


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json``, parameters allowed (FastAPI's rule)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


@dataclass(frozen=True, slots=True)
class BodyPlan:
    """How a route's endpoint is called without FastAPI's handler: its body model, the names of its
    body and request parameters, the (parameter, header) of each optional header, the endpoint."""

    model: type[BaseModel]
    body_name: str
    request_name: str
    headers: tuple[tuple[str, str], ...]
    endpoint: Callable[..., Any]

    def parse(self, raw: bytes) -> BaseModel | None:
        """The body validated in one step, or None: FastAPI's handler then says what is wrong."""
        try:
            return self.model.model_validate_json(raw) if raw else None
        except ValueError:  # pydantic's ValidationError included
            return None

    async def call(self, body: BaseModel, request: Request) -> Response:
        values: dict[str, Any] = {self.body_name: body, self.request_name: request}
        for name, header in self.headers:
            values[name] = request.headers.get(header)
        response = await self.endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{self.endpoint.__qualname__} returned {type(response).__name__}, not a Response")
        return response


def takes_fast(content_type: str | None) -> bool:
    """Whether a request with this content type may take a fast plan: JSON, and tracing off."""
    return _is_json(content_type) and not _traced()


class FastBodyRoute(APIRoute):
    """An ``APIRoute`` whose endpoint, when it takes ``(body: Model, request: Request)`` and returns
    a ``Response``, gets its common requests without FastAPI's general machinery (module docstring)."""

    def get_route_handler(self) -> Handler:
        general = super().get_route_handler()
        plan = body_plan(self)
        if plan is None:
            return general

        async def handler(request: Request) -> Response:
            if not takes_fast(request.headers.get("content-type")):
                return await general(request)
            # kept on the request: FastAPI's handler reads it again if need be
            body = plan.parse(await request.body())
            if body is None:
                return await general(request)
            return await plan.call(body, request)

        return handler


def body_plan(route: APIRoute) -> BodyPlan | None:
    """The route's :class:`BodyPlan` when its endpoint takes exactly a pydantic body, the
    ``Request`` and optional string headers, and returns a ``Response``; else None."""
    dependant = _effective(route).dependant
    endpoint = dependant.call
    if endpoint is None or not inspect.iscoroutinefunction(endpoint):
        return None
    if (
        dependant.path_params
        or dependant.query_params
        or dependant.cookie_params
        or dependant.dependencies
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or not dependant.request_param_name
        or len(dependant.body_params) != 1
        or getattr(route, "_embed_body_fields", False)
    ):
        return None
    headers = [_optional_header(field) for field in dependant.header_params]
    if None in headers:
        return None
    field = dependant.body_params[0]
    model = getattr(field, "type_", None) or getattr(getattr(field, "field_info", None), "annotation", None)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    returns = typing.get_type_hints(endpoint).get("return")
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    named = tuple(cast(list[tuple[str, str]], headers))
    return BodyPlan(model, field.name, dependant.request_param_name, named, endpoint)


def _optional_header(field: Any) -> tuple[str, str] | None:
    """(parameter, header name as FastAPI reads it) for a ``str | None = None`` header, else None."""
    info = field.field_info
    if info.annotation != (str | None) or info.default is not None:  # a required one has no default
        return None
    header = field.alias
    if getattr(info, "convert_underscores", True) and header == field.name:
        header = header.replace("_", "-")
    return field.name, header


def _effective(route: APIRoute) -> Any:
    """The route as included (FastAPI 0.16x builds an included route's handler with its merged
    dependencies in a context variable); the route itself elsewhere."""
    var = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = var.get() if var is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        return context
    return route

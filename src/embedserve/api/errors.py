"""Every error a client sees, rendered in the dialect of the route that raised it.

One handler per error family, found by class hierarchy: domain errors (``embedserve.errors``),
request validation, HTTP errors of the router (404 route, 405 method), and anything
unexpected, which is logged and answered with a generic 500 that never echoes its text. Each
handler turns its error into one :class:`Problem` (the native status and message); the
route's dialect renders it as its vendor does:

    openai  {"error": {"message", "type", "param", "code"}}   401, 404, 400, 413, 422, 429, 503, 500
    cohere  {"message"}                                        400 for any invalid request; 401, 404,
                                                               429, 503, 500
    tei     {"error", "error_type"}                            400 Empty, 401 Unauthorized, 413
                                                               Validation, 422 (a body that does not
                                                               parse), 404 NotFound, 429 Overloaded,
                                                               503 Unhealthy, 424 Backend

A 429 carries ``Retry-After`` and ``Retry-After-Ms`` (the same wait to the millisecond, which
OpenAI's clients prefer; ``admission.spread``) in every dialect, a 401 ``WWW-Authenticate: Bearer``.

A route's dialect is its route class (:func:`dialect_route`); routes without one (and
unknown paths) speak OpenAI's. The ASGI middleware that answer before routing (API keys, body
limits) find the dialect by matching the path themselves (:func:`render_scope`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from embedserve import errors as e
from embedserve.api.fast_route import FastBodyRoute
from embedserve.api.responses import FastJSONResponse

log = logging.getLogger(__name__)

STATUS: dict[type[e.EmbedServeError], int] = {
    e.InvalidInput: 422,
    e.LimitExceeded: 413,
    e.ModelNotFound: 404,
    e.WrongModelType: 400,
    e.ModelUnavailable: 503,
    e.DeadlineExceeded: 503,
    e.Unauthorized: 401,
    e.Overloaded: 429,
    e.InferenceFailed: 500,
}


def status_for(exc: e.EmbedServeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def _error_type(status: int) -> str:
    if status == 503:
        return "service_unavailable"
    if status >= 500:
        return "server_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    return "invalid_request_error"


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> FastJSONResponse:
    body = {"error": {"message": message, "type": _error_type(status), "param": param, "code": code}}
    return FastJSONResponse(body, status_code=status, headers=headers)


MAX_MESSAGE = 1000  # characters of an error message: with a clipped param, every error body is under 2 KB
MAX_PARAM = 200


@dataclass(frozen=True)
class Problem:
    """An error as the native API states it; each dialect renders it its own way. Its message and
    param are clipped, so that no error body repeats more than a short prefix of what it rejects."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None
    unparsed: bool = False  # the request body did not match the route's schema

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", e.clip(self.message, MAX_MESSAGE))
        if self.param is not None:
            object.__setattr__(self, "param", e.clip(self.param, MAX_PARAM))


def _openai(p: Problem) -> FastJSONResponse:
    return error_response(p.status, p.message, param=p.param, code=p.code, headers=p.headers)


def _cohere(p: Problem) -> FastJSONResponse:
    """Cohere answers every invalid request with 400 and ``{"message"}``."""
    status = 400 if p.status in (413, 422) else p.status
    return FastJSONResponse({"message": p.message}, status_code=status, headers=p.headers)


def _tei_status(p: Problem) -> tuple[int, str]:
    if p.code == "empty_input":
        return 400, "Empty"
    if p.status == 401:
        return 401, "Unauthorized"
    if p.status == 422 and p.unparsed:
        return 422, "Validation"
    if p.status in (413, 422):
        return 413, "Validation"  # TEI's status for every validation error
    if p.status == 404:
        return 404, "NotFound"  # embedserve's: TEI serves one model and knows no other
    if p.status == 503:
        return 503, "Unhealthy"
    if p.status == 429:
        return 429, "Overloaded"
    if p.code == "inference_failed":
        return 424, "Backend"
    return p.status, "Backend" if p.status >= 500 else "Validation"


def _tei(p: Problem) -> FastJSONResponse:
    status, kind = _tei_status(p)
    return FastJSONResponse({"error": p.message, "error_type": kind}, status_code=status, headers=p.headers)


RENDERERS: dict[str, Callable[[Problem], FastJSONResponse]] = {"openai": _openai, "cohere": _cohere, "tei": _tei}


def dialect_route(dialect: str) -> type[APIRoute]:
    """A route class whose routes' errors are rendered in ``dialect`` (a key of ``RENDERERS``), and
    whose common requests skip FastAPI's general handler (fast_route.py)."""
    if dialect not in RENDERERS:
        raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(RENDERERS)}. This is a bug.")
    return type(f"{dialect.capitalize()}Route", (FastBodyRoute,), {"dialect": dialect})


def matched_route(scope: Scope) -> Any:
    """The route the request matched; before routing, the route its path and method would match
    (``None`` when none does)."""
    route = scope.get("route")
    if route is None:
        for candidate in flat_routes(getattr(scope.get("app"), "router", None)):
            if candidate.matches(scope)[0] is Match.FULL:
                return candidate
    return route


def flat_routes(router: Any) -> Iterator[Any]:
    """Every route of ``router``, those of included routers too (FastAPI wraps them in an object
    that matches as a whole and keeps the router it includes as ``original_router``)."""
    for route in getattr(router, "routes", ()):
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from flat_routes(included)
        else:
            yield route


def dialect_of(scope: Scope) -> str:
    """The dialect of the request's route (OpenAI's when it has none)."""
    return getattr(matched_route(scope), "dialect", "openai")


def render(request: Request, problem: Problem) -> FastJSONResponse:
    """``problem`` in the dialect of the route the request matched (OpenAI's by default)."""
    return RENDERERS[dialect_of(request.scope)](problem)


def render_scope(scope: Scope, problem: Problem) -> FastJSONResponse:
    """``problem`` for a request that middleware answers before the router has run."""
    return RENDERERS[dialect_of(scope)](problem)


def problem_for(exc: e.EmbedServeError) -> Problem:
    """A domain error as the native API states it, with its headers (Retry-After, WWW-Authenticate)."""
    headers = None
    if isinstance(exc, e.Overloaded):
        headers = exc.retry_after_headers
    elif isinstance(exc, e.Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return Problem(status_for(exc), exc.message, exc.param, exc.code, headers)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope (the native and OpenAI routes, and unknown paths)."""

    error: OpenAIErrorDetail


class CohereError(BaseModel):
    message: str


class TEIError(BaseModel):
    error: str
    error_type: str


_ERROR_MODELS: dict[str, type[BaseModel]] = {"openai": OpenAIError, "cohere": CohereError, "tei": TEIError}
_ERROR_STATUSES: dict[str, tuple[int, ...]] = {
    "openai": (400, 401, 404, 413, 422, 429, 500, 503),
    "cohere": (400, 401, 404, 429, 500, 503),
    "tei": (400, 401, 404, 413, 422, 424, 429, 500, 503),
}


def error_responses(dialect: str) -> dict[int | str, dict[str, Any]]:
    """The error bodies a dialect's routes answer, for the OpenAPI schema (``APIRouter(responses=...)``);
    it replaces FastAPI's default 422, which is not what this server sends."""
    model = _ERROR_MODELS[dialect]
    return {status: {"model": model, "description": "error"} for status in _ERROR_STATUSES[dialect]}


def _param(loc: tuple[Any, ...]) -> str | None:
    """('body', 'options', 'top_k') → 'options.top_k'; ('body', 'input', 2) → 'input[2]'."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part) in ("str", "int", "float", "bool"):
            continue  # pydantic's union branch tags, e.g. 'list[str]'
        else:
            name = e.clip(str(part), 60)  # a client's key: quoted up to a short prefix
            out += f".{name}" if out else name
    return out or None


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable sentence for a pydantic error list, and the field it names."""
    first = errors[0]
    kind = first.get("type")
    if kind == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}", None
    own_param = first.get("ctx", {}).get("param")  # our validators name the item themselves
    param = own_param or _param(tuple(first.get("loc", ())))
    if kind == "missing" and param is None:
        return "request body is required (a JSON object)", None
    if kind == "missing":
        return f"'{param}' is required", param
    if kind == "extra_forbidden":
        return f"unknown field '{param}'", param
    if kind == "model_attributes_type" and param is None:
        return "request body must be a JSON object (sent with Content-Type: application/json)", None
    msg = str(first["msg"]).removeprefix("Value error, ")
    return (f"{param}: {msg}" if param and not own_param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.EmbedServeError)
    async def domain_error(request: Request, exc: e.EmbedServeError) -> FastJSONResponse:
        return render(request, problem_for(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> FastJSONResponse:
        message, param = validation_message(list(exc.errors()))
        return render(request, Problem(422, message, param, "invalid_value", unparsed=True))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> FastJSONResponse:
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
            message, code = "request body could not be parsed: send a UTF-8 JSON object", "invalid_body"
            if isinstance(exc.__cause__, UnicodeDecodeError):
                message += f" (byte {exc.__cause__.start} is not UTF-8)"
        if exc.status_code == 404:
            message = f"no route {request.method} {e.clip(request.url.path)}; see /docs"
        return render(request, Problem(exc.status_code, message, code=code, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> FastJSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return render(
            request, Problem(500, "internal server error; the server log has the details", None, "internal_error")
        )

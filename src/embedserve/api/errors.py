"""Every error a client sees, rendered in OpenAI's envelope::

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

One handler per error family, found by class hierarchy: domain errors (``embedserve.errors``),
request validation, HTTP errors of the router (404 route, 405 method), and anything
unexpected, which is logged and answered with a generic 500 that never echoes its text.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from embedserve import errors as e
from embedserve.api.responses import FastJSONResponse

log = logging.getLogger(__name__)

STATUS: dict[type[e.EmbedServeError], int] = {
    e.InvalidInput: 422,
    e.LimitExceeded: 413,
    e.ModelNotFound: 404,
    e.WrongModelType: 400,
    e.ModelUnavailable: 503,
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


def _param(loc: tuple[Any, ...]) -> str | None:
    """('body', 'options', 'top_k') → 'options.top_k'; ('body', 'input', 2) → 'input[2]'."""
    out = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part) in ("str", "int", "float", "bool"):
            continue  # pydantic's union branch tags, e.g. 'list[str]'
        else:
            out += f".{part}" if out else str(part)
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
        status = status_for(exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, e.Overloaded) else None
        return error_response(status, exc.message, param=exc.param, code=exc.code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> FastJSONResponse:
        message, param = validation_message(list(exc.errors()))
        return error_response(422, message, param=param, code="invalid_value")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> FastJSONResponse:
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's words
            message, code = "request body could not be parsed: send a UTF-8 JSON object", "invalid_body"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        return error_response(exc.status_code, message, code=code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> FastJSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal server error; the server log has the details", code="internal_error")

"""Error rendering: status per domain error, and one sentence naming the field for validation errors."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import orjson
import pytest

from embedserve import errors as e
from embedserve.api.errors import RENDERERS, Problem, _param, dialect_route, status_for, validation_message


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (e.InvalidInput("x"), 422),
        (e.EmptyInput("x"), 422),
        (e.InputTooLong("x"), 422),
        (e.LimitExceeded("x"), 413),
        (e.ModelNotFound("m", ["a"]), 404),
        (e.WrongModelType("x"), 400),
        (e.ModelUnavailable("x"), 503),
        (e.InferenceFailed("x"), 500),
        (e.CatalogError("x"), 500),
    ],
)
def test_status_by_class(exc: e.EmbedServeError, status: int) -> None:
    assert status_for(exc) == status


def test_model_not_found_lists_ids() -> None:
    err = e.ModelNotFound("nope", ["b", "a"])
    assert err.message == "model 'nope' does not exist; available models: a, b"
    assert err.param == "model"


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "options", "top_k"), "options.top_k"),
        (("body", "input", 2), "input[2]"),
        (("body", "input", "list[str]", 1), "input[1]"),
        (("body",), None),
    ],
)
def test_param_paths(loc: tuple[Any, ...], param: str | None) -> None:
    assert _param(loc) == param


@pytest.mark.parametrize(
    ("error", "message", "param"),
    [
        (
            {"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error", "ctx": {"error": "bad"}},
            "request body is not valid JSON: bad",
            None,
        ),
        (
            {"type": "missing", "loc": ("body",), "msg": "Field required"},
            "request body is required (a JSON object)",
            None,
        ),
        ({"type": "missing", "loc": ("body", "query"), "msg": "Field required"}, "'query' is required", "query"),
        ({"type": "extra_forbidden", "loc": ("body", "foo"), "msg": "Extra"}, "unknown field 'foo'", "foo"),
        (
            {
                "type": "string_type",
                "loc": ("body", "input"),
                "msg": "input[3] must be a string, got integer",
                "ctx": {"param": "input[3]"},
            },
            "input[3] must be a string, got integer",
            "input[3]",
        ),
        (
            {
                "type": "greater_than_equal",
                "loc": ("body", "top_k"),
                "msg": "Input should be greater than or equal to 1",
            },
            "top_k: Input should be greater than or equal to 1",
            "top_k",
        ),
    ],
)
def test_validation_message(error: dict[str, Any], message: str, param: str | None) -> None:
    assert validation_message([error]) == (message, param)


@pytest.mark.parametrize(
    ("problem", "openai", "cohere", "tei"),
    [
        (Problem(422, "m", "input", "empty_input"), 422, 400, (400, "Empty")),
        (Problem(422, "m", "input", "invalid_value"), 422, 400, (413, "Validation")),
        (Problem(422, "m", "input", "invalid_value", unparsed=True), 422, 400, (422, "Validation")),
        (Problem(413, "m", "input", "limit_exceeded"), 413, 400, (413, "Validation")),
        (Problem(404, "m", "model", "model_not_found"), 404, 404, (404, "NotFound")),
        (Problem(400, "m", "model", "wrong_model_type"), 400, 400, (400, "Validation")),
        (Problem(503, "m", "model", "model_unavailable"), 503, 503, (503, "Unhealthy")),
        (Problem(500, "m", None, "inference_failed"), 500, 500, (424, "Backend")),
        (Problem(500, "m", None, "internal_error"), 500, 500, (500, "Backend")),
    ],
)
def test_each_dialect_renders_its_vendors_body_and_status(
    problem: Problem, openai: int, cohere: int, tei: tuple[int, str]
) -> None:
    out = RENDERERS["openai"](problem)
    assert out.status_code == openai
    assert orjson.loads(out.body) == {
        "error": {"message": "m", "type": ANY, "param": problem.param, "code": problem.code}
    }
    out = RENDERERS["cohere"](problem)
    assert (out.status_code, orjson.loads(out.body)) == (cohere, {"message": "m"})
    out = RENDERERS["tei"](problem)
    assert (out.status_code, orjson.loads(out.body)) == (tei[0], {"error": "m", "error_type": tei[1]})


def test_unknown_dialect_is_a_bug() -> None:
    with pytest.raises(ValueError, match="This is a bug"):
        dialect_route("soap")

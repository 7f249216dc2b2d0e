"""Log records as text or JSON lines, with the request id of the request being served."""

from __future__ import annotations

import io
import json
import logging

import pytest

from embedserve import context
from embedserve.logs import JSONFormatter, RequestIdFilter, TextFormatter


@pytest.fixture
def capture() -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("embedserve.test-logs")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream, handler


def test_json_lines_carry_the_request_id_and_extra_fields(capture: tuple) -> None:
    logger, stream, handler = capture
    handler.setFormatter(JSONFormatter())
    token = context.current.set(context.RequestContext("req-1"))
    try:
        logger.info("POST %s %d", "/embed", 200, extra={"status": 200, "model": "m"})
    finally:
        context.current.reset(token)
    logger.info("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "POST /embed 200" and first["request_id"] == "req-1"
    assert first["status"] == 200 and first["model"] == "m" and first["level"] == "info"
    assert "request_id" not in second


def test_json_keeps_tracebacks_in_one_line(capture: tuple) -> None:
    logger, stream, handler = capture
    handler.setFormatter(JSONFormatter())
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_text_lines_name_the_request(capture: tuple) -> None:
    logger, stream, handler = capture
    handler.setFormatter(TextFormatter())
    token = context.current.set(context.RequestContext("abc"))
    try:
        logger.warning("slow")
    finally:
        context.current.reset(token)
    assert stream.getvalue().rstrip().endswith("WARNING embedserve.test-logs: slow [request abc]")

"""Log records as text or JSON lines, with the request id of the request being served."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import pytest

from embedserve import context
from embedserve.logs import JSONFormatter, RequestIdFilter, TextFormatter, TurnBufferedHandler


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


class _Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def turns() -> tuple[logging.Logger, _Writes]:
    stream = _Writes()
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("embedserve.test-turns")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_a_turn_of_the_event_loop_writes_its_lines_at_once(turns: tuple[logging.Logger, _Writes]) -> None:
    logger, stream = turns

    async def serve() -> list[str]:
        for i in range(3):
            logger.info("request %d", i)
        held = list(stream.writes)  # nothing written yet: the turn is not over
        await asyncio.sleep(0)  # the next turn writes them
        logger.info("request 3")
        await asyncio.sleep(0)
        return held

    held = asyncio.run(serve())
    assert held == []
    assert stream.writes == ["INFO request 0\nINFO request 1\nINFO request 2\n", "INFO request 3\n"]


def test_other_threads_and_warnings_are_written_at_once_after_the_waiting_lines(
    turns: tuple[logging.Logger, _Writes],
) -> None:
    logger, stream = turns

    async def serve() -> list[str]:
        logger.info("on the loop")
        thread = threading.Thread(target=logger.info, args=("from a batch thread",))
        thread.start()
        thread.join()
        after_thread = list(stream.writes)
        logger.info("again on the loop")
        logger.warning("slow")
        return after_thread

    after_thread = asyncio.run(serve())
    assert after_thread == ["INFO on the loop\nINFO from a batch thread\n"]
    assert stream.writes[1:] == ["INFO again on the loop\nWARNING slow\n"]


def test_flush_writes_the_lines_still_waiting(turns: tuple[logging.Logger, _Writes]) -> None:
    """At exit (``logging.shutdown`` flushes every handler) a turn's lines are not lost."""
    logger, stream = turns

    async def serve() -> None:
        logger.info("last request")
        logger.handlers[0].flush()

    asyncio.run(serve())
    assert stream.writes == ["INFO last request\n"]

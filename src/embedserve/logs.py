"""Server logging: text or one JSON object a line (``EMBEDSERVE_LOG_FORMAT``), each record with
the id of the request it belongs to.

uvicorn's own loggers propagate to the root logger set up here, so its start-up and shutdown
lines come out in the same format; its access log is replaced by ``embedserve.access`` (one
line a request, with the request id, route, status, duration and model). Nothing here logs
headers or bodies, so API keys never reach the log.

A busy server logs a line for every request, so the lines are cheap to make: the records skip
what no format here prints (the caller's file and line, the thread and process: the logging
HOWTO's "Optimization"), and the lines logged on the event loop's thread during one turn of
the loop are written together at the start of the next turn (:class:`TurnBufferedHandler`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

import orjson

from embedserve import context

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# attributes a LogRecord has anyway; anything else was passed as ``extra`` and goes in the JSON
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (or ``None``) to every record: the request being served when it was logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = context.current.get()
        record.request_id = ctx.id if ctx is not None else None
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request {request_id}]" if request_id else line


class JSONFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id"?, ...extra, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            out["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TurnBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines logged on an event loop's thread in one write a turn
    of the loop (the first line of a turn schedules the write: ``call_soon``), rather than one
    write and flush a line. Lines from other threads, and warnings and errors, are written at
    once, after any lines still waiting, so the order is kept; :meth:`flush` (at exit too) writes
    what waits."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        loop = asyncio._get_running_loop()  # the loop running on this thread, if any
        if loop is None or record.levelno >= logging.WARNING:
            self._waiting.append(line)
            self.flush()
            return
        if not self._waiting:
            loop.call_soon(self.flush)
        self._waiting.append(line)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._waiting:
                lines, self._waiting = "".join(self._waiting), []
                try:
                    self.stream.write(lines)
                except Exception:
                    self.handleError(logging.makeLogRecord({"msg": "lines lost: the log stream failed"}))
            super().flush()


def configure_logging(level: str, fmt: str) -> None:
    """Root logging for the server process: ``fmt`` is ``text`` or ``json``."""
    logging._srcfile = None  # no format here prints the caller's file or line
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = TurnBufferedHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True

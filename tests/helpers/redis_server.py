"""A real ``redis-server`` (the Debian package; ``make test`` installs it) on 127.0.0.1 and a free
port, with no persistence, for the tests and benchmarks of the shared embedding cache; and a
"blackhole": a port that accepts connections and never answers, as a Redis that hangs would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.server import free_port, stop


def redis_server_binary() -> str:
    """``EMBEDSERVE_REDIS_SERVER``, else redis-server on the PATH; a test fails (not skips) without one."""
    explicit = os.environ.get("EMBEDSERVE_REDIS_SERVER")
    found = explicit or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        pytest.fail(
            f"no redis-server at {found}: install Debian's redis-server (make test does) or set EMBEDSERVE_REDIS_SERVER"
        )
    return found


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: Redis gone at once, mid-run, as a crash would leave it."""
        self.process.kill()
        self.process.wait()


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def running_redis(timeout: float = 30.0) -> Iterator[RedisServer]:
    """``redis-server`` on a free loopback port (no RDB, no AOF); yields once it answers PING; stopped after."""
    port = free_port()
    cmd = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer on port {port} in {timeout} s")
            time.sleep(0.05)
        yield RedisServer(port, process)
    finally:
        stop(process, grace=10)


@contextlib.contextmanager
def blackhole() -> Iterator[str]:
    """A redis:// URL whose port completes the TCP handshake (the kernel's backlog) and then
    never reads or answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()

"""Start the real server process on 127.0.0.1 and a free port, and always stop it.

Used by the end-to-end tests and by the benchmarks under bench/.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_seconds: float

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_server(
    config: Path | str = ROOT / "models.yaml",
    *,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 180.0,
    wait_for_models: bool = True,
) -> Iterator[Server]:
    """``python -m embedserve serve`` on a free loopback port; yields once /health says started."""
    port = free_port()
    log_path = log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"embedserve-{port}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "embedserve",
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(
            url, process, log_path, timeout, lambda health: health.json()["startup_complete"] or not wait_for_models
        )
        yield Server(url, process, log_path, time.perf_counter() - started)
    finally:
        stop(process)


def wait_until_up(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
    ready: Callable[[httpx.Response], bool],
) -> None:
    """Poll ``url``'s ``/health`` until ``ready`` says so; the log's tail in the error if the
    process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_path.read_text()[-4000:]
            raise RuntimeError(f"server exited with {process.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready in {timeout} s:\n{log_path.read_text()[-4000:]}")
        # ValueError: a front that answers before the app does (Ray Serve's proxy: a text 404)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if ready(httpx.get(f"{url}/health", timeout=2)):
                return
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

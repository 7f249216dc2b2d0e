"""What the benchmark scripts share: a server to measure, and writing their figures."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    """``url`` as given, or a server of the default catalogue started here and stopped on exit."""
    if url:
        yield url.rstrip("/")
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.server import running_server

    with running_server(ROOT / "models.yaml") as server:
        yield server.url


@contextlib.contextmanager
def null_server(log_path: Path, answer: str = "refuse") -> Iterator[int]:
    """``bench/null_server.py`` answering as ``answer`` says, on uvicorn (httptools, uvloop: as
    ``embedserve serve`` runs) on a free loopback port; yields the port once it answers, stops it
    on exit."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.server import free_port, stop, wait_until_up

    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "null_server:app", "--app-dir", str(ROOT / "bench")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    cmd += ["--log-level", "warning", "--no-access-log"]
    env = {**os.environ, "NULL_SERVER_ANSWER": answer}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process, log_path, 60, lambda health: health.status_code == 200)
        yield port
    finally:
        stop(process)


def cpu_seconds(host: str, port: int) -> dict[str, float]:
    """embedserve's ``embedserve_cpu_seconds_total`` by ``threads`` (event_loop, model, tokenizer,
    other) from its ``/metrics``; empty where the server does not export it."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == "embedserve_cpu_seconds":
            return {sample.labels["threads"]: sample.value for sample in family.samples}
    return {}


def own_cpu_seconds() -> float:
    """CPU seconds this process (the load generator) has used."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, its folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]], server_port: int = 80) -> dict[str, Any]:
    """An ASGI HTTP scope from 127.0.0.1, for benches that call an app in-process."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", server_port),
    }

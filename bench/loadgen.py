"""A small closed-loop HTTP load generator for the benchmarks.

Each of ``concurrency`` clients holds one keep-alive HTTP/1.1 connection and sends its next
request as soon as the previous answer is in. It speaks just enough HTTP (Content-Length
bodies) to stay cheap: on a 2-core machine the load generator shares the cores with the
server, so a heavy client (httpx at 128 connections) would measure itself. The same
generator drives every server compared, so ratios stay fair.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Connection:
    """One keep-alive connection to 127.0.0.1."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure_open(self) -> None:
        """Connect unless the kept-alive connection is still open: like an HTTP client's pool, a
        connection the server closed while it idled (its end of file already read) is replaced."""
        if self.writer is None or self.writer.is_closing() or self.reader is None or self.reader.at_eof():
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        await self.ensure_open()
        assert self.reader is not None and self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise ConnectionError("chunked responses are not supported by this load generator")
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class LoadResult:
    concurrency: int
    items_per_request: int
    seconds: float
    requests: int
    items: int
    errors: int
    latencies_ms: list[float] = field(repr=False)
    window: tuple[Any, Any] | None = field(default=None, repr=False)  # run_load's ``window()`` at its start and end

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "items_per_request": self.items_per_request,
            "requests": self.requests,
            "errors": self.errors,
            "items_per_second": round(self.items_per_second, 1),
            "p50_ms": round(self.percentile(50), 2) if self.latencies_ms else None,  # JSON has no NaN
            "p99_ms": round(self.percentile(99), 2) if self.latencies_ms else None,
        }


async def run_load(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    items_per_request: int,
    seconds: float,
    warmup: float = 1.0,
    probe: Callable[[], Any] | None = None,
    window: Callable[[], Any] | None = None,
) -> LoadResult:
    """Closed loop for ``warmup + seconds``; counts the requests that complete inside the measured window.

    At the end of the window the clients still waiting are cancelled (their connections close,
    so the server drops their work) and their requests are not counted. ``window`` (blocking: run
    on a thread, the clients going on) is called as the measured window starts and as it ends; the
    two results are the ``LoadResult``'s ``window``."""
    next_body = itertools.cycle(bodies).__next__
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    stop_at = measure_from + seconds
    latencies: list[float] = []
    counted = [0, 0]  # requests, errors

    async def client() -> None:
        conn = Connection(host, port)
        try:
            while loop.time() < stop_at:
                t0 = loop.time()
                try:
                    status, _ = await conn.request("POST", path, next_body())
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    status = 0
                    conn.close()
                t1 = loop.time()
                if measure_from <= t1 <= stop_at:
                    latencies.append((t1 - t0) * 1000)
                    counted[0] += 1
                    counted[1] += status != 200
        finally:
            conn.close()

    marks: list[Any] = []

    async def mark_start() -> None:
        assert window is not None
        await asyncio.sleep(max(0.0, measure_from - loop.time()))
        marks.append(await asyncio.to_thread(window))

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    if probe is not None:
        tasks.append(asyncio.create_task(probe()))
    started = asyncio.create_task(mark_start()) if window is not None else None
    await asyncio.sleep(max(0.0, stop_at - loop.time()))
    if started is not None:
        await started
        marks.append(await asyncio.to_thread(window))  # type: ignore[arg-type]
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ok = counted[0] - counted[1]
    return LoadResult(
        concurrency,
        items_per_request,
        seconds,
        counted[0],
        ok * items_per_request,
        counted[1],
        latencies,
        (marks[0], marks[1]) if len(marks) == 2 else None,
    )


async def probe_latency(host: str, port: int, path: str, out: list[float], every: float = 0.02) -> None:
    """GET ``path`` every ``every`` seconds until cancelled, appending each latency (ms) to ``out``."""
    conn = Connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            status, _ = await conn.request("GET", path)
            if status == 200:
                out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(every)
    finally:
        conn.close()


def embeddings_load(
    port: int, bodies: Sequence[bytes], concurrency: int, seconds: float, probe: Callable[[], Any] | None = None
) -> LoadResult:
    """:func:`run_load` of one text a request on a local server's ``/v1/embeddings``, from
    synchronous code; a request that failed fails the benchmark."""
    result = asyncio.run(
        run_load(
            "127.0.0.1",
            port,
            "/v1/embeddings",
            bodies,
            concurrency=concurrency,
            items_per_request=1,
            seconds=seconds,
            probe=probe,
        )
    )
    assert result.errors == 0, f"{result.errors} errors"
    return result

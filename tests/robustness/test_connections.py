"""Connection attacks against the real server (issue 18, findings 5 and 7, and the parser's 400):
silent sockets, slowloris, slow bodies, huge headers and idle keep-alive connections are all
closed, with a JSON error where a request had begun, while /health keeps answering."""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from helpers.server import Server
from robustness.support import Attack, attack

HEADER_TIMEOUT = 2.0  # the open server's EMBEDSERVE_HEADER_TIMEOUT
IDLE_TIMEOUT = 2.0


def _connect(server: Server) -> socket.socket:
    parts = urlsplit(server.url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _outcome(sock: socket.socket, wait: float) -> str:
    """What the server did with the connection within ``wait`` seconds: its status line's code,
    ``closed`` (closed without a response) or ``open``."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return "open"
    except ConnectionResetError:
        pass
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def _json_error(sock_data: bytes) -> dict[str, object]:
    head, _, body = sock_data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return dict(json.loads(body)["error"])


@contextlib.contextmanager
def _fd_limit(server: Server, limit: int) -> Iterator[None]:
    """The server's limit on open files lowered to ``limit`` for the block (then restored)."""
    before = resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (limit, before[1]))
    try:
        yield
    finally:
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, before)


def _finish(a: Attack, socks: list[socket.socket], wait: float) -> None:
    deadline = time.monotonic() + wait
    for sock in socks:
        a.saw(_outcome(sock, max(0.1, deadline - time.monotonic())))
        sock.close()


def test_silent_sockets_cannot_use_up_file_descriptors(open_server: Server) -> None:
    """600 connections that send nothing, against a server allowed 300 open files: the cap on
    connections (100) closes the oldest idle ones, the header timeout the rest; /health answers."""
    with _fd_limit(open_server, 300), attack(open_server, "silent-sockets-600") as a:
        socks = [_connect(open_server) for _ in range(600)]
        _finish(a, socks, HEADER_TIMEOUT + 3)
    a.check(health_s=3.0, rss_mib=100)  # before: /health refused (no file descriptor left)
    assert a.statuses == {"closed": 600}, a.statuses


def test_slowloris_headers_are_timed_out(open_server: Server) -> None:
    with attack(open_server, "slowloris-50") as a:
        socks = [_connect(open_server) for _ in range(50)]
        for sock in socks:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        while time.monotonic() - started < HEADER_TIMEOUT + 1:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")  # one byte of a header that never ends
            time.sleep(0.3)
        _finish(a, socks, 3)
    a.check(health_s=1.5, rss_mib=100)
    assert a.statuses == {"408": 50}, a.statuses


def test_slow_bodies_are_timed_out(open_server: Server) -> None:
    with attack(open_server, "slow-body-50") as a:
        socks = [_connect(open_server) for _ in range(50)]
        head = b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        for sock in socks:
            sock.sendall(head + b"Content-Length: 100000\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < HEADER_TIMEOUT + 2:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b" " * 10)  # 10 bytes a few times a second: far below 1 KB/s
            time.sleep(0.3)
        _finish(a, socks, 3)
    a.check(health_s=1.5, rss_mib=100)
    assert a.statuses == {"408": 50}, a.statuses


@pytest.mark.parametrize("megabytes", [1, 32])
def test_a_huge_header_gets_431_at_once(open_server: Server, megabytes: int) -> None:
    with attack(open_server, f"header-{megabytes}mb") as a:
        sock = _connect(open_server)
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the server closes before it has read it all
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (megabytes << 20) + b"\r\n\r\n")
        sock.settimeout(10)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
        elapsed = time.monotonic() - started
        sock.close()
        a.saw(data.split(b" ", 2)[1].decode() if data else "closed")
    a.check(health_s=1.5, rss_mib=100)
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    assert "EMBEDSERVE_MAX_HEADER_BYTES" in str(_json_error(data)["message"])
    assert elapsed < 5, f"the 431 took {elapsed:.1f} s"


def test_invalid_http_gets_a_json_400(open_server: Server) -> None:
    sock = _connect(open_server)
    sock.sendall(b"NOT HTTP AT ALL\x00\r\n\r\n")
    sock.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert _json_error(data)["code"] == "invalid_http"


def test_idle_keep_alive_connections_are_closed(open_server: Server) -> None:
    sock = _connect(open_server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sock.settimeout(5)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    assert _outcome(sock, IDLE_TIMEOUT + 3) == "closed"
    assert time.monotonic() - started < IDLE_TIMEOUT + 2
    sock.close()


def _writes(server: Server) -> int:
    """The write system calls the server process has made (``syscw`` of /proc/<pid>/io)."""
    with open(f"/proc/{server.process.pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscw:"))


def test_a_response_leaves_in_one_write(open_server: Server) -> None:
    """Head and body in one write (connections.HeadWithBody): a GET's answer costs the server as
    many write calls as a HEAD's, which has no body (uvicorn alone writes the head and the body apart:
    one more a GET). The access log's write, if any, is the same for both."""
    parts = urlsplit(open_server.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)

    def writes_a_request(method: str, path: str, n: int = 50) -> float:
        conn.request(method, path)
        conn.getresponse().read()  # the connection is open and warm
        before = _writes(open_server)
        for _ in range(n):
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            assert (body == b"") == (method == "HEAD")
        return (_writes(open_server) - before) / n

    try:
        head = writes_a_request("HEAD", "/health")
        assert writes_a_request("GET", "/health") == pytest.approx(head, abs=0.2)
        assert writes_a_request("GET", "/v1/models") == pytest.approx(head, abs=0.2)
    finally:
        conn.close()


def test_100_continue_is_sent_before_the_body_is(open_server: Server) -> None:
    body = json.dumps({"input": "a"}).encode()
    sock = _connect(open_server)
    try:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")  # before a byte of the body
        sock.sendall(body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        assert json.loads(data.partition(b"\r\n\r\n")[2])["data"][0]["embedding"]
    finally:
        sock.close()


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].lower()
    return next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:"))

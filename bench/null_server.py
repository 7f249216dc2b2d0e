"""The floor of bench/overload.py: an ASGI app that refuses every request at once.

Served by the same HTTP server as embedserve (uvicorn, httptools, uvloop), it reads each
request's body and answers 429 with a ``Retry-After`` spread as embedserve spreads its own
(``embedserve.admission.spread`` of 1 s), and ``GET /health`` with 200. It does no other work,
so a flood's 429 latencies against it are what the machine, the HTTP server and the flood's
clients cost by themselves: no server on this HTTP stack answers a flood faster. ::

    python -m uvicorn null_server:app --app-dir bench --host 127.0.0.1 --port PORT --loop uvloop --http httptools
"""

from __future__ import annotations

from typing import Any

from embedserve.admission import spread

BUSY = b'{"error":{"message":"busy","type":"rate_limit_error","code":"overloaded"}}'
HEALTH = b'{"status":"ok"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # nothing to start or stop
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/health":
        status, body, extra = 200, HEALTH, []
    else:
        status, body, extra = 429, BUSY, [(b"retry-after", str(spread(1)).encode())]
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The floor of the benches: an ASGI app that answers every request at once, doing no other work.

Served by the same HTTP server as embedserve (uvicorn, httptools, uvloop), it reads each
request's body and answers ``GET /health`` with 200 and anything else as ``NULL_SERVER_ANSWER``
says:

- ``refuse`` (the default; bench/overload.py): 429 with a ``Retry-After`` and ``Retry-After-Ms``
  spread as embedserve spreads its own (``embedserve.admission.spread`` of 1 s), so a flood's 429 latencies against it
  are what the machine, the HTTP server and the flood's clients cost by themselves: no server on
  this HTTP stack answers a flood faster;
- ``embedding`` (bench/batching.py): 200 with OpenAI's response for one embedding of
  ``NULL_SERVER_DIMENSIONS`` floats (384), so a request served one at a time costs what the HTTP
  round trip of an embedding costs by itself. ::

    python -m uvicorn null_server:app --app-dir bench --host 127.0.0.1 --port PORT --loop uvloop --http httptools
"""

from __future__ import annotations

import os
import random
from typing import Any

import orjson

from embedserve.admission import retry_after_headers, spread

BUSY = b'{"error":{"message":"busy","type":"rate_limit_error","code":"overloaded"}}'
HEALTH = b'{"status":"ok"}'
ANSWER = os.environ.get("NULL_SERVER_ANSWER", "refuse")
_dimensions = int(os.environ.get("NULL_SERVER_DIMENSIONS", "384"))
EMBEDDING = orjson.dumps(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [random.gauss(0, 0.05) for _ in range(_dimensions)]}],
        "model": "dense",
        "usage": {"prompt_tokens": 12, "total_tokens": 12},
    }
)


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
    elif ANSWER == "embedding":
        status, body, extra = 200, EMBEDDING, []
    else:
        seconds, ms = retry_after_headers(spread(1))
        extra = [(b"retry-after", str(seconds).encode()), (b"retry-after-ms", str(ms).encode())]
        status, body = 429, BUSY
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

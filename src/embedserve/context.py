"""What one HTTP request carries down to the registry and the batcher, without HTTP.

The API's request middleware makes a :class:`RequestContext` per request and sets it in
:data:`current`; the layers below read its deadline and write what they measured (the model
that served it, tokenization, queue and inference time, tokens computed). The middleware then
turns those into timing headers, an access-log line and metrics. Code that runs outside a
request (tests, benchmarks) finds ``None`` and records nothing.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestContext:
    id: str
    started: float = field(default_factory=time.perf_counter)
    deadline: float | None = None  # time.monotonic() after which queued work is dropped (503)
    model: str | None = None
    tokenization: float = 0.0  # seconds
    queue: float = 0.0
    inference: float = 0.0
    tokens: int = 0  # tokens the model computed for this request (after truncation)
    cache_lookups: int = 0  # inputs looked up in the embedding cache
    cache_hits: int = 0  # of them, found there (not computed)
    client_gone: bool = False  # the client disconnected before the response started (logged as 499)


current: ContextVar[RequestContext | None] = ContextVar("embedserve_request", default=None)


def note_cache(lookups: int, hits: int) -> None:
    """Record inputs looked up in the embedding cache and found there (the ``x-cache-hits`` header)."""
    ctx = current.get()
    if ctx is not None:
        ctx.cache_lookups += lookups
        ctx.cache_hits += hits


def note_model(model_id: str) -> None:
    """Record the model a request is served by (its metrics label)."""
    ctx = current.get()
    if ctx is not None:
        ctx.model = model_id

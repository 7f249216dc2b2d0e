"""Answers given before routing: the 429 a busy model would give anyway, and ``/health``.

Under a flood most requests are refused (admission by estimated wait, ``embedserve.admission``),
and a refusal that comes only after routing, dependency solving, validation and ``tasks`` costs
the event loop about as much as an admitted request: the loop then drowns in refusals, and the
admitted requests, the health probes and the next refusals wait behind them. So this middleware,
inside the API keys and body limits (their 401, 403, 413 and 422 come first), looks at each POST
to a route that computes with a model: it reads the body (whole: the body limits read it), finds
the model the request names (``model`` in the JSON; on TEI's routes also the ``X-Model``
header; else the route's default model, as the route picks it) and the characters of its texts,
and asks that model's batcher for its verdict (:meth:`~embedserve.batching.Batcher.refusal`,
the one :meth:`~embedserve.batching.Batcher.incoming` gives the route). When the batcher refuses,
it answers the 429 the route would: the same body in the route's dialect and a ``Retry-After``
from the same estimate.

The request is weighed as no bigger than its texts (the texts of the route's one field, without
the prompt the model puts before each, or a rerank's query), so a request refused here would be
refused by its route too; one that passes is weighed again, whole, by its route. The texts
matter: in a burst, every request still being tokenized that is no longer than this one is ahead
of it, and those make most of the wait.

Anything else goes on to the app with its body unchanged: another route, a request without a
deadline, a body that is not a JSON object, a model the catalogue does not have or of another type
(the route answers those with its own error), a model served in other processes (Ray: no batcher
here) and a fusion reranker (its two models admit its work). A request refused here is refused
before the embedding cache is looked up: while its model cannot keep up, even a text the cache
holds is answered 429.

``GET /health`` (and ``HEAD``) is answered here too, with the route's body
(:meth:`~embedserve.registry.Registry.health`): a probe does not queue behind a flood's routing.
The route stays in the app, for the OpenAPI schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import context
from embedserve.api.asgi import header, replay
from embedserve.api.errors import Problem, matched_route, problem_for, render_scope
from embedserve.api.responses import FastJSONResponse
from embedserve.batching import Batcher
from embedserve.registry import ModelHandle, Registry

# The routes that compute with a model → the model type they ask the registry for (None: TEI's
# ``POST /``, which serves the catalogue's default model whatever its type) and the body's field
# whose texts are tokenized for it (None: none counted; see ``_texts``).
COMPUTE_ROUTES: dict[str, tuple[str | None, str | None]] = {
    "/v1/embeddings": ("embeddings", "input"),
    "/api/v1/embeddings": ("embeddings", "input"),
    "/api/v1/embed_sparse": ("sparse-embeddings", "input"),
    "/api/v1/rerank": ("rerank", "documents"),
    "/v1/rerank": ("rerank", "documents"),
    "/v2/rerank": ("rerank", "documents"),
    "/v1/embed": ("embeddings", "texts"),
    "/v2/embed": ("embeddings", "texts"),
    "/v1/multi-vector": ("multi-vector", "input"),
    "/api/v1/embed_multi_vector": ("multi-vector", "input"),
    "/api/v1/multi_vector/align": ("multi-vector", None),
    "/embed": ("embeddings", "inputs"),
    "/embed_sparse": ("sparse-embeddings", "inputs"),
    "/rerank": ("rerank", "texts"),
    "/similarity": ("embeddings", None),
    "/": (None, "inputs"),  # "texts" when the model reranks
}
TEI_ROUTES = frozenset({"/embed", "/embed_sparse", "/rerank", "/similarity", "/"})  # X-Model names a model too


class Shed:
    """Refuses at once the requests a busy model would refuse (429), and answers ``/health``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[tuple[str, str], Any] = {}  # (method, path) → the app's route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path == "/health" and method == "GET":  # HEAD too: routed as GET (web.HeadAndDocsPolicy)
            registry = _registry(scope)
            if registry is not None:
                await self._health(scope, receive, send, registry)
                return
        elif method == "POST" and path in COMPUTE_ROUTES:
            message = await receive()
            weighed = _weigh(scope, path, message)
            problem = self._refusal(scope, path, weighed) if weighed is not None else None
            if problem is not None:
                await render_scope(scope, problem)(scope, receive, send)
            else:
                await self.app(scope, replay(message, receive), send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, path: str, weighed: _Weighed) -> Problem | None:
        """The 429 of a request its model's batcher refuses now, else None."""
        refused = weighed.batcher.refusal(weighed.deadline, weighed.chars, weighed.own)
        if refused is None:
            return None
        context.note_model(weighed.model_id)
        # The route, as the router would have set it: the error's dialect and the metrics' label.
        scope["route"] = self._route(scope, "POST", path)
        return problem_for(refused)

    async def _health(self, scope: Scope, receive: Receive, send: Send, registry: Registry) -> None:
        scope["route"] = self._route(scope, "GET", "/health")
        await FastJSONResponse(registry.health())(scope, receive, send)  # HEAD: web.HeadAndDocsPolicy drops the body

    def _route(self, scope: Scope, method: str, path: str) -> Any:
        key = (method, path)
        if key not in self._routes:
            probe = {"type": "http", "method": method, "path": path, "root_path": "", "app": scope.get("app")}
            self._routes[key] = matched_route(probe)
        return self._routes[key]


def _registry(scope: Scope) -> Registry | None:
    registry = getattr(getattr(scope.get("app"), "state", None), "registry", None)
    return registry if isinstance(registry, Registry) else None


@dataclass(slots=True)
class _Weighed:
    """A request's model (with a batcher in this process), its deadline, and the least work it asks."""

    model_id: str
    batcher: Batcher
    deadline: float
    chars: int  # characters of its texts, at least (what the route tokenizes has prompts, queries too)
    own: float  # its model work, at least (admission.WaitEstimator.tokens_for)


def _weigh(scope: Scope, path: str, message: Message) -> _Weighed | None:
    """The request weighed for its model's admission; None when admission does not judge it
    (no deadline), its model is not weighed here (none with a batcher in this process), or
    anything about the request is unusual: its route then answers it, and says what is wrong."""
    ctx = context.current.get()
    if ctx is None or ctx.deadline is None:
        return None
    if message["type"] != "http.request" or message.get("more_body", False):
        return None  # the body limits hand on a body whole; anything else is not ours to read
    registry = _registry(scope)
    if registry is None:
        return None
    try:
        data = orjson.loads(message.get("body", b""))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    handle = _named(registry, path, scope, data)
    batcher = getattr(handle, "batcher", None)
    if handle is None or not isinstance(batcher, Batcher):
        return None  # not found, of another type, in Ray replicas, a fusion reranker
    kind, field = COMPUTE_ROUTES[path]
    if kind is None and handle.entry.spec.type == "rerank":
        field = "texts"  # TEI's POST / reranks with the body of /rerank
    chars, texts = _texts(data.get(field) if field is not None else None)
    engine = getattr(handle, "engine", None)
    cap = engine.max_length if engine is not None else None  # the tokens the model reads of a text
    own = batcher.estimator.tokens_for(chars, max(1, texts), cap)
    return _Weighed(handle.id, batcher, ctx.deadline, chars, own)


def _named(registry: Registry, path: str, scope: Scope, data: dict[str, Any]) -> ModelHandle | None:
    """The model the request names, as its route would find it; None when the route would not."""
    named = data.get("model")
    if named is not None and not isinstance(named, str):
        return None
    if path in TEI_ROUTES:
        given = header(scope, b"x-model")
        if named and given and named != given:
            return None  # the route's 422: the two disagree
        named = named or given
    if named == "":
        return None
    kind = COMPUTE_ROUTES[path][0]
    model_id = named if named is not None else registry.catalog.default_id(kind)
    handle = registry.models.get(model_id) if model_id is not None else None
    if handle is None or (kind is not None and kind not in handle.entry.spec.serves):
        return None
    return handle


def _texts(value: object) -> tuple[int, int]:
    """The characters and the number of the texts in a field: a string, or a list of them (token
    ids, a Cohere document object: not counted)."""
    if isinstance(value, str):
        return len(value), 1
    if not isinstance(value, list):
        return 0, 0
    strings = [item for item in value if isinstance(item, str)]
    return sum(map(len, strings)), len(strings)

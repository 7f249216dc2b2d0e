"""The three tasks (dense, sparse, rerank) on top of the registry, free of HTTP.

Each task checks its inputs against the configured limits, resolves the prompt (against the
model's own prompts and the catalogue's, merged: ``model_settings``), tokenizes
once (the counts give usage and the over-long check when truncation is off; the truncated ids
go to the batcher), awaits the model's batcher, and post-processes the arrays. Dialects in
``api/`` only map their wire fields onto these calls.

Dense and sparse embeddings (and the bi-encoder ``similarity`` reranker's) go through the
model's embedding cache first (``cache``, when the handle has one): inputs found there skip
tokenization and the batcher; the rest are computed together, in one submit, and stored.
Inputs read in windows (``long_inputs: chunk``) are kept pooled, under keys with the windowing
in them; a request that asks for each window's vector (``return_chunks``) computes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from embedserve import context, fusion, long_inputs
from embedserve.cache import Cached, KeyParts
from embedserve.cache import keys as cache_keys
from embedserve.catalog import LongInputs, ModelSpec
from embedserve.engines.base import (
    DenseEngine,
    Engine,
    RerankEngine,
    SparseEngine,
    SparseVector,
    TextEngine,
    Token,
    Tokens,
    Windows,
)
from embedserve.engines.base import Side as Side  # re-exported for the API layer
from embedserve.errors import EmptyInput, InputTooLong, InvalidInput, LimitExceeded
from embedserve.model_settings import PURPOSE_PROMPTS, similarity_scores
from embedserve.quantization import Precision, normalize, quantize, unit_ranges
from embedserve.registry import FusionHandle, ModelHandle, ModelState
from embedserve.settings import Settings

_SETTINGS = Settings.model_fields  # the defaults below are the settings' own
V = TypeVar("V")


@dataclass(frozen=True)
class Limits:
    """Server-wide request limits (a model's ``max_inputs`` overrides ``max_inputs`` and ``max_documents``)."""

    max_inputs: int = _SETTINGS["max_inputs"].default
    max_input_chars: int = _SETTINGS["max_input_chars"].default
    max_documents: int = _SETTINGS["max_documents"].default  # documents per rerank request
    max_request_chars: int = _SETTINGS["max_request_chars"].default  # tokenized per request, prompts included
    max_chunks_per_input: int = _SETTINGS["max_chunks_per_input"].default  # windows of one input (chunk)
    max_chunks_per_request: int = _SETTINGS["max_chunks_per_request"].default  # windows of a request (chunk)

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits ``settings`` set."""
        return cls(
            settings.max_inputs,
            settings.max_input_chars,
            settings.max_documents,
            settings.max_request_chars,
            settings.max_chunks_per_input,
            settings.max_chunks_per_request,
        )


def check_texts(
    texts: Sequence[str], limits: Limits, spec: ModelSpec, param: str, *, maximum: int | None = None
) -> None:
    """Refuse an empty list, empty strings and anything past the limits, naming the input."""
    check_count(len(texts), limits, spec, param, maximum=maximum)
    for i, text in enumerate(texts):
        check_text(text, limits, f"{param}[{i}]")


def check_count(count: int, limits: Limits, spec: ModelSpec, param: str, *, maximum: int | None = None) -> None:
    """At least one input, and no more than the model's limit, else ``maximum``, else the server's."""
    if not count:
        raise EmptyInput(f"'{param}' is an empty list; send at least one text", param=param)
    max_inputs = spec.max_inputs or maximum or limits.max_inputs
    if count > max_inputs:
        raise LimitExceeded(f"'{param}' has {count} items; the limit is {max_inputs} per request", param=param)


def check_text(text: str, limits: Limits, where: str) -> None:
    """One text: not empty, within the character limit, and valid Unicode (no lone surrogates)."""
    if not text:
        raise EmptyInput(f"{where} is an empty string; every text needs at least one character", param=where)
    if len(text) > limits.max_input_chars:
        raise LimitExceeded(
            f"{where} has {len(text)} characters; the limit is {limits.max_input_chars} per text", param=where
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"{where} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character {exc.start}", param=where
        ) from None


def check_prefixed(
    texts: Sequence[str], prefix: str | None, limits: Limits, param: str, prefix_param: str = "options.prompt"
) -> None:
    """A prompt (or a rerank query) is put before every text it goes with, so it counts in the same
    budget as the texts: itself within the per-text limit, each text with it too, and the request's
    characters to tokenize, the prefix once per text, within ``max_request_chars``."""
    if prefix:
        check_text(prefix, limits, prefix_param)
    n = len(prefix or "")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]), default=None)
    if longest is not None and n + len(texts[longest]) > limits.max_input_chars:
        where = f"{param}[{longest}]"
        raise LimitExceeded(
            f"{where} has {len(texts[longest])} characters, {n + len(texts[longest])} with '{prefix_param}' before it; "
            f"the limit is {limits.max_input_chars} per text",
            param=where,
        )
    total = sum(map(len, texts)) + n * len(texts)
    if total > limits.max_request_chars:
        raise LimitExceeded(
            f"'{param}' comes to {total} characters to tokenize ('{prefix_param}' before each text counted); "
            f"the limit is {limits.max_request_chars} per request (EMBEDSERVE_MAX_REQUEST_CHARS)",
            param=prefix_param if n else param,
        )


class Counted(Protocol):
    """A unit's token counts: a tokenized unit (:class:`Tokens`) or a cached output (``cache.Cached``)."""

    @property
    def original(self) -> int: ...

    @property
    def cost(self) -> int: ...


def used_tokens(
    units: Sequence[Counted], max_length: int, truncate: bool, where: Callable[[int], str], model_id: str
) -> int:
    """Tokens the model reads (after truncation), or an error naming an over-long input when truncation is off."""
    if not truncate:
        for i, unit in enumerate(units):
            if unit.original > max_length:
                raise InputTooLong(
                    f"{where(i)} has {unit.original} tokens; model '{model_id}' reads at most {max_length} "
                    "(truncate is false, or long_inputs is error: shorten the input, or allow truncation or chunking)",
                    param=where(i),
                )
    return sum(unit.cost for unit in units)


def _item(param: str) -> Callable[[int], str]:
    return lambda i: f"{param}[{i}]"


@dataclass(frozen=True)
class EmbedOptions:
    """How :func:`embed` computes and returns dense vectors (a dialect maps its wire fields here)."""

    normalize: bool | None = None
    prompt: str | None = None
    prompt_name: str | None = None
    precision: Precision = "float32"
    dimensions: int | None = None  # None: the model's default (catalogue dimensions, else truncate_dim)
    truncate: bool = True  # false: long_inputs error (when long_inputs is None)
    truncation_direction: Side = "right"  # which end of an over-long input is cut
    max_tokens: int | None = None  # a lower token cap than the model's max_length
    long_inputs: LongInputs | None = None  # None: error if truncate is false, else the catalogue's
    chunk_overlap: int | None = None  # tokens shared by consecutive windows; None: the catalogue's
    max_chunks: int | None = None  # chunk: read only each input's first n windows
    return_chunks: bool = False  # chunk: also each window's vector and span


@dataclass(frozen=True)
class DenseResult:
    embeddings: npt.NDArray[np.generic]
    tokens: int
    chunks: list[npt.NDArray[np.generic]] | None = None  # return_chunks: each input's window vectors
    spans: list[list[tuple[int, int]]] | None = None  # return_chunks: each window's [start, end) in characters


@dataclass(frozen=True)
class Rows(Generic[V]):
    """Per-input outputs of a model as it gives them (before ``dimensions``, normalization,
    quantization, ``top_k``), the tokens read, and (``return_chunks``) each input's windows."""

    rows: list[V]
    tokens: int
    chunks: list[list[V]] | None = None
    spans: list[list[tuple[int, int]]] | None = None


Opts = TypeVar("Opts", EmbedOptions, "SparseOptions")


def resolve_long_inputs(options: Opts, spec: ModelSpec) -> Opts:
    """``options`` with ``long_inputs`` and ``chunk_overlap`` as the request and the model's
    catalogue entry settle them (everything that changes a vector is then in ``options``)."""
    chosen = long_inputs.mode(options.long_inputs, options.truncate, spec.long_inputs)
    long_inputs.check_return_chunks(options.return_chunks, chosen, "options.return_chunks")
    overlap = spec.chunk_overlap if options.chunk_overlap is None else options.chunk_overlap
    return replace(options, long_inputs=chosen, chunk_overlap=overlap if chosen == "chunk" else None)


async def model_rows(
    handle: ModelHandle,
    engine: TextEngine,
    texts: Sequence[str],
    prompt: str | None,
    options: EmbedOptions | SparseOptions,
    limits: Limits,
    param: str,
    task: str | None = None,
) -> Rows[Any]:
    """The model's output for each text (``options`` resolved by :func:`resolve_long_inputs`):
    the text cut or refused when it is too long, or (``chunk``) its windows' outputs pooled.
    Every text's units go to the batcher in one submit."""
    limit = min(engine.max_length, options.max_tokens or engine.max_length)
    if options.long_inputs != "chunk":
        side = options.truncation_direction
        inputs = Inputs(
            texts,
            KeyParts("sparse" if isinstance(engine, SparseEngine) else "dense", prompt, limit, side, task),
            lambda part: engine.encode_texts(part, prompt, side, limit, task=task),
            len(prompt or ""),
            _item(param),
        )
        [(outputs, tokens)] = await raw_outputs(handle, engine, [inputs], options.long_inputs == "truncate")
        return Rows(outputs, tokens)
    overlap = options.chunk_overlap or 0
    if handle.cache is not None and handle.cache.enabled and not options.return_chunks:
        return await _cached_chunked_rows(handle, engine, texts, prompt, options, limits, param, task, limit)
    windows = await handle.tokenize_texts(
        texts, lambda part: engine.window_texts(part, prompt, overlap, limit, task=task), len(prompt or "")
    )
    chunked = long_inputs.Chunked(long_inputs.first(windows, options.max_chunks))
    chunked.check(limits.max_chunks_per_input, limits.max_chunks_per_request, param)
    outputs = await handle.submit(chunked.units)
    rows = _pooled(engine, outputs, chunked)
    if not options.return_chunks:
        return Rows(rows, chunked.tokens)
    return Rows(rows, chunked.tokens, chunked.split(outputs), chunked.spans)


def _pooled(engine: TextEngine, outputs: list[Any], chunked: long_inputs.Chunked) -> list[Any]:
    """One output per input from its windows' outputs: SPLADE's element-wise max, else the
    token-weighted mean."""
    if isinstance(engine, SparseEngine):
        return list(long_inputs.pool_sparse(outputs, chunked))
    return list(long_inputs.pool_dense(np.stack(outputs).astype(np.float32, copy=False), chunked))


async def _cached_chunked_rows(
    handle: ModelHandle,
    engine: TextEngine,
    texts: Sequence[str],
    prompt: str | None,
    options: EmbedOptions | SparseOptions,
    limits: Limits,
    param: str,
    task: str | None,
    limit: int,
) -> Rows[Any]:
    """:func:`model_rows` in windows, through the cache: a text's pooled output is kept under a key
    that has the windowing (overlap, window cap) in it; the texts not found are windowed, checked
    against the window caps and computed in one submit. Each window's own output is not kept."""
    cache = handle.cache
    assert cache is not None
    overlap, sparse = options.chunk_overlap or 0, isinstance(engine, SparseEngine)
    windowing = ("chunk", overlap, options.max_chunks)
    parts = KeyParts("sparse" if sparse else "dense", prompt, limit, options.truncation_direction, task, windowing)
    keys = cache_keys(cache.model_key(handle.entry, engine), parts, texts)
    found = await cache.get_many(keys, handle.id)
    context.note_cache(len(keys), sum(v is not None for v in found))
    todo: dict[bytes, int] = {}  # key of each text to compute -> its first index
    for i, value in enumerate(found):
        if value is None:
            todo.setdefault(keys[i], i)
    missing = [texts[i] for i in todo.values()]
    windows = await handle.tokenize_texts(
        missing, lambda part: engine.window_texts(part, prompt, overlap, limit, task=task), len(prompt or "")
    )
    windows = long_inputs.first(windows, options.max_chunks)
    # the caps count the windows to compute, each named by its input's index in the request
    at = {i: w for i, w in zip(todo.values(), windows, strict=True)}
    none = Windows([], [], [])
    long_inputs.Chunked([at.get(i, none) for i in range(len(texts))]).check(
        limits.max_chunks_per_input, limits.max_chunks_per_request, param
    )
    chunked = long_inputs.Chunked(windows)
    pooled = _pooled(engine, await handle.submit(chunked.units), chunked) if windows else []
    costs = [sum(unit.cost for unit in w.units) for w in windows]
    computed = {key: Cached(row, cost, cost) for key, row, cost in zip(todo, pooled, costs, strict=True)}
    cache.put_many(list(computed.items()), handle.id)
    values = [value if value is not None else computed[key] for key, value in zip(keys, found, strict=True)]
    return Rows([v.output for v in values], sum(v.cost for v in values))


async def embed(
    handle: ModelHandle, texts: Sequence[str], options: EmbedOptions, limits: Limits, param: str = "input"
) -> DenseResult:
    spec = handle.entry.spec
    check_texts(texts, limits, spec, param)
    engine = await handle.ready_engine()
    settings = handle.settings(engine)
    prompt = settings.resolve(options.prompt, options.prompt_name)
    check_prefixed(texts, prompt, limits, param)
    dimension = engine.dimension or 0
    if options.dimensions is not None and not 1 <= options.dimensions <= dimension:
        raise InvalidInput(
            f"dimensions must be between 1 and {dimension} for model '{handle.id}'; got {options.dimensions}",
            param="dimensions",
        )

    assert isinstance(engine, DenseEngine)
    options = resolve_long_inputs(options, spec)
    rows = await model_rows(handle, engine, texts, prompt, options, limits, param)
    width = options.dimensions or settings.dimensions
    unit = spec.normalize if options.normalize is None else options.normalize

    def finish(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.generic]:
        if width is not None and width < vectors.shape[1]:  # Matryoshka: the first dimensions, before normalizing
            vectors = np.ascontiguousarray(vectors[:, :width])
        if unit:
            vectors = normalize(vectors)
        ranges = unit_ranges(vectors.shape[1]) if unit and options.precision in ("int8", "uint8") else None
        return quantize(vectors, options.precision, ranges)

    embeddings = finish(np.stack(rows.rows).astype(np.float32, copy=False))
    if rows.chunks is None:
        return DenseResult(embeddings, rows.tokens)
    chunks = [finish(np.stack(group).astype(np.float32, copy=False)) for group in rows.chunks]
    return DenseResult(embeddings, rows.tokens, chunks, rows.spans)


@dataclass(frozen=True)
class SparseResult:
    vectors: list[SparseVector]
    tokens: int
    terms: list[list[str]] | None
    chunks: list[list[SparseVector]] | None = None  # return_chunks: each input's window vectors
    spans: list[list[tuple[int, int]]] | None = None  # return_chunks: each window's [start, end) in characters


@dataclass(frozen=True)
class SparseOptions:
    """How :func:`embed_sparse` computes and returns sparse vectors."""

    prompt: str | None = None
    prompt_name: str | None = None
    top_k: int | None = None  # keep the k largest weights of each vector
    return_tokens: bool = False  # also the vocabulary token of each index
    truncate: bool = True  # false: long_inputs error (when long_inputs is None)
    truncation_direction: Side = "right"
    max_tokens: int | None = None  # a lower token cap than the model's max_length
    long_inputs: LongInputs | None = None  # None: error if truncate is false, else the catalogue's
    chunk_overlap: int | None = None  # tokens shared by consecutive windows; None: the catalogue's
    max_chunks: int | None = None  # chunk: read only each input's first n windows
    return_chunks: bool = False  # chunk: also each window's vector and span


async def embed_sparse(
    handle: ModelHandle, texts: Sequence[str], options: SparseOptions, limits: Limits, param: str = "input"
) -> SparseResult:
    spec = handle.entry.spec
    check_texts(texts, limits, spec, param)
    engine = await handle.ready_engine()
    assert isinstance(engine, SparseEngine)
    settings = handle.settings(engine)
    # a side of a Router model (query, document) may be named without a prompt of that name
    name = options.prompt_name
    side_only = name is not None and name in engine.tasks and name not in settings.prompts
    resolved = settings.resolve(options.prompt, None if side_only else name)
    task = name or settings.default_prompt
    check_prefixed(texts, resolved, limits, param)
    options = resolve_long_inputs(options, spec)
    rows = await model_rows(handle, engine, texts, resolved, options, limits, param, task)
    vectors = [_top_k(v, options.top_k) for v in rows.rows]
    terms = None
    if options.return_tokens:
        terms = await asyncio.to_thread(lambda: [engine.tokens(v.indices) for v in vectors])
    chunks = None if rows.chunks is None else [[_top_k(v, options.top_k) for v in group] for group in rows.chunks]
    return SparseResult(vectors, rows.tokens, terms, chunks, rows.spans)


def _top_k(vector: SparseVector, k: int | None) -> SparseVector:
    if k is None or len(vector.values) <= k:
        return vector
    keep = np.sort(np.argsort(-vector.values, kind="stable")[:k])
    return SparseVector(vector.indices[keep], vector.values[keep])


@dataclass(frozen=True)
class RerankResult:
    order: list[int]  # document indices, most relevant first
    scores: npt.NDArray[np.float32]  # by document index
    tokens: int


@dataclass(frozen=True)
class RerankOptions:
    """How :func:`rerank` scores and orders documents."""

    top_n: int | None = None  # return only the n best
    truncate: bool = True
    truncation_direction: Side = "right"
    max_tokens_per_doc: int | None = None  # cut each document to this many tokens (special tokens included)
    raw_scores: bool = False  # the model's scores before its activation
    long_inputs: LongInputs | None = None  # None: chunk if max_chunks_per_doc is set, else as embed decides
    max_chunks_per_doc: int | None = None  # chunk: score only each document's first n windows


async def rerank(
    handle: ModelHandle,
    query: str,
    documents: Sequence[str],
    options: RerankOptions,
    limits: Limits,
    param: str = "documents",
) -> RerankResult:
    """The documents ordered by their score against ``query``, most relevant first."""
    spec = handle.entry.spec
    check_text(query, limits, "query")
    check_texts(documents, limits, spec, param, maximum=min(limits.max_documents, limits.max_inputs))
    check_prefixed(documents, query, limits, param, "query")
    if isinstance(handle, FusionHandle):
        fused = await _fused_scores(handle, query, documents, options, limits, param)
        order = sorted(range(len(documents)), key=lambda i: -float(fused.scores[i]))
        return replace(fused, order=order[: options.top_n] if options.top_n else order)

    engine = await handle.ready_engine()
    assert isinstance(engine, RerankEngine)
    if rerank_mode(options, spec) == "chunk":
        return await _chunked_rerank(handle, engine, query, documents, options, limits, param)
    if engine.embedding_prompts() is not None:
        scores, tokens = await _bi_encoder_scores(handle, engine, query, documents, options, param)
        order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
        return RerankResult(order[: options.top_n] if options.top_n else order, scores, tokens)
    prepared = await handle.tokenize(
        lambda: engine.encode_pairs(query, documents, options.truncation_direction, options.max_tokens_per_doc),
        sum(map(len, documents)) + len(query) * len(documents),
        texts=len(documents),
    )
    n_query = prepared.query_units

    def where(i: int) -> str:
        return "query" if i < n_query else f"{param}[{i - n_query}]"

    tokens = used_tokens(prepared.units, engine.max_length, options.truncate, where, handle.id)
    outputs = await handle.submit(prepared.units)
    # off the event loop: an engine may compute it elsewhere (deploy/: in a Ray replica)
    scores = await asyncio.to_thread(engine.scores, outputs, n_query, options.raw_scores)
    order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
    return RerankResult(order[: options.top_n] if options.top_n else order, scores, tokens)


def rerank_mode(options: RerankOptions, spec: ModelSpec) -> LongInputs:
    """How a rerank reads long documents: ``max_chunks_per_doc`` asks for windows (Cohere's
    meaning), else as :func:`long_inputs.mode` decides."""
    if options.max_chunks_per_doc is not None:
        if options.long_inputs not in (None, "chunk"):
            raise InvalidInput(
                f"max_chunks_per_doc reads documents in windows; long_inputs {options.long_inputs} does not: "
                "give one of them",
                param="max_chunks_per_doc",
            )
        return "chunk"
    return long_inputs.mode(options.long_inputs, options.truncate, spec.long_inputs)


async def _chunked_rerank(
    handle: ModelHandle,
    engine: RerankEngine,
    query: str,
    documents: Sequence[str],
    options: RerankOptions,
    limits: Limits,
    param: str,
) -> RerankResult:
    """Each document scored by its best window, the query read with every window."""
    overlap = handle.entry.spec.chunk_overlap
    query_units, windows = await handle.tokenize(
        lambda: engine.window_pairs(query, documents, overlap, options.max_tokens_per_doc),
        sum(map(len, documents)) + len(query) * len(documents),
    )
    chunked = long_inputs.Chunked(long_inputs.first(windows, options.max_chunks_per_doc))
    chunked.check(limits.max_chunks_per_input, limits.max_chunks_per_request, param)
    outputs = await handle.submit([*query_units, *chunked.units])
    per_window = await asyncio.to_thread(engine.scores, outputs, len(query_units), options.raw_scores)
    scores = long_inputs.best(per_window, chunked)
    order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
    tokens = sum(u.cost for u in query_units) + chunked.tokens
    return RerankResult(order[: options.top_n] if options.top_n else order, scores, tokens)


async def _bi_encoder_scores(
    handle: ModelHandle, engine: RerankEngine, query: str, documents: Sequence[str], options: RerankOptions, param: str
) -> tuple[npt.NDArray[np.float32], int]:
    """A reranker that embeds the query and each document on its own (``similarity``): the
    embeddings through the cache (:func:`raw_outputs`), the query's and the documents' together."""
    prompts = engine.embedding_prompts()
    assert prompts is not None and isinstance(engine, TextEngine)
    q_prompt, d_prompt = prompts
    side, cap = options.truncation_direction, options.max_tokens_per_doc
    d_limit = min(engine.max_length, cap or engine.max_length)

    def group(texts: Sequence[str], prompt: str | None, limit: int, where: Callable[[int], str]) -> Inputs:
        encode: Callable[[list[str]], list[Tokens]] = lambda part: engine.encode_texts(part, prompt, side, limit)  # noqa: E731
        # a cap below the model's cuts documents whatever ``truncate`` says (Cohere's max_tokens_per_doc)
        return Inputs(
            texts, KeyParts("dense", prompt, limit, side), encode, len(prompt or ""), where, engine.max_length
        )

    (q_out, q_tokens), (d_out, d_tokens) = await raw_outputs(
        handle,
        engine,
        [
            group([query], q_prompt, engine.max_length, lambda _: "query"),
            group(documents, d_prompt, d_limit, _item(param)),
        ],
        options.truncate,
    )
    # off the event loop: an engine may compute it elsewhere (deploy/: in a Ray replica)
    scores = await asyncio.to_thread(engine.scores, [*q_out, *d_out], 1, options.raw_scores)
    return scores, q_tokens + d_tokens


@dataclass(frozen=True)
class Inputs:
    """Texts of one request that share a prompt, token limit and side: looked up, tokenized and
    checked together (see :func:`raw_outputs`)."""

    texts: Sequence[str]
    parts: KeyParts  # the key's parts besides the model and the text
    encode: Callable[[list[str]], list[Tokens]]  # the engine's tokenization of some of the texts
    prefix_chars: int  # the prompt's length, read before each text
    where: Callable[[int], str]  # the request field of text i, for errors
    check_limit: int | None = None  # the over-long check's limit, when not ``parts.limit``


async def raw_outputs(
    handle: ModelHandle, engine: Engine, groups: Sequence[Inputs], truncate: bool
) -> list[tuple[list[Any], int]]:
    """Each group's raw model outputs (in its texts' order) and the tokens its inputs read.

    With the handle's cache: the outputs found there; the others tokenized, checked (an over-long
    input with ``truncate`` false is an error whether it was cached or not), computed in one submit
    for all groups, then stored; a text repeated within a group is computed once. Without a cache:
    every text tokenized and computed, as the model's batcher alone would."""
    cache = handle.cache
    use_cache = cache is not None and cache.enabled
    found: list[list[Cached | None]] = [[None] * len(g.texts) for g in groups]
    keys: list[list[bytes]] = [[] for _ in groups]
    if cache is not None and use_cache:
        model = cache.model_key(handle.entry, engine)
        keys = [cache_keys(model, g.parts, g.texts) for g in groups]
        flat = await cache.get_many([k for ks in keys for k in ks], handle.id)
        start = 0
        for n, g in enumerate(groups):
            found[n], start = flat[start : start + len(g.texts)], start + len(g.texts)
        context.note_cache(len(flat), sum(v is not None for v in flat))

    units: list[Tokens] = []
    slots: list[list[int]] = []  # per group and text: its unit in ``units``, -1 for a hit
    tokens: list[int] = []
    for n, g in enumerate(groups):
        ids: Sequence[bytes | int] = keys[n] if use_cache else range(len(g.texts))
        todo: dict[bytes | int, int] = {}  # key (or index) of each text to compute -> that text's index
        for i, value in enumerate(found[n]):
            if value is None:
                todo.setdefault(ids[i], i)
        texts = [g.texts[i] for i in todo.values()]
        fresh = await handle.tokenize_texts(texts, g.encode, g.prefix_chars) if texts else []
        at = {key: len(units) + j for j, key in enumerate(todo)}
        units += fresh
        slot = [-1 if value is not None else at[ids[i]] for i, value in enumerate(found[n])]
        counted = [v if v is not None else units[s] for v, s in zip(found[n], slot, strict=True)]
        tokens.append(used_tokens(counted, g.check_limit or g.parts.limit, truncate, g.where, handle.id))
        slots.append(slot)

    computed = await handle.submit(units) if units else []
    if cache is not None and use_cache and units:
        firsts = {
            s: key for ks, slot in zip(keys, slots, strict=True) for key, s in zip(ks, slot, strict=True) if s >= 0
        }
        cache.put_many(
            [(key, Cached(computed[s], units[s].cost, units[s].original)) for s, key in firsts.items()], handle.id
        )
    return [
        ([v.output if v is not None else computed[s] for v, s in zip(found[n], slot, strict=True)], tokens[n])
        for n, slot in enumerate(slots)
    ]


async def _fused_scores(
    handle: FusionHandle, query: str, documents: Sequence[str], options: RerankOptions, limits: Limits, param: str
) -> RerankResult:
    """Engine ``fusion``: the query and the documents embedded by its dense and sparse models
    (each side with the model's prompt for that purpose, if it has one), scored by ``fusion``.
    The four requests go to the two models' batchers together; the order is left to the caller."""
    if handle.state is ModelState.UNLOADED:
        await handle.ready_engine()  # 503, naming this model
    dense, sparse, fuse = handle.dense, handle.sparse, handle.entry.spec.fuse
    assert fuse is not None  # the catalogue requires it for engine fusion
    dense_prompts, sparse_prompts = await asyncio.gather(dense.model_settings(), sparse.model_settings())
    side = options.truncation_direction
    # the query is cut as ever; documents in windows when the rerank chunks
    query_mode = long_inputs.mode(None, options.truncate, "truncate")
    chunk = rerank_mode(options, handle.entry.spec) == "chunk"
    doc_mode: LongInputs = "chunk" if chunk else query_mode
    most = options.max_chunks_per_doc

    def dense_side(purpose: str, cap: int | None, mode: LongInputs) -> EmbedOptions:
        name = dense_prompts.prompt_name_for(PURPOSE_PROMPTS[purpose])
        return EmbedOptions(
            normalize=True,
            prompt_name=name,
            truncation_direction=side,
            max_tokens=cap,
            long_inputs=mode,
            max_chunks=most if mode == "chunk" else None,
            return_chunks=mode == "chunk",
        )

    def sparse_side(
        texts: Sequence[str], purpose: str, cap: int | None, where: str, mode: LongInputs
    ) -> Awaitable[SparseResult]:
        name = sparse_prompts.prompt_name_for(PURPOSE_PROMPTS[purpose])
        sparse_options = SparseOptions(
            prompt_name=name,
            truncation_direction=side,
            max_tokens=cap,
            long_inputs=mode,
            max_chunks=most if mode == "chunk" else None,
            return_chunks=mode == "chunk",
        )
        return embed_sparse(sparse, texts, sparse_options, limits, where)

    per_doc = None if chunk else options.max_tokens_per_doc
    q_dense, d_dense, q_sparse, d_sparse = await asyncio.gather(
        embed(dense, [query], dense_side("query", None, query_mode), limits, "query"),
        embed(dense, documents, dense_side("document", per_doc, doc_mode), limits, param),
        sparse_side([query], "query", None, "query", query_mode),
        sparse_side(documents, "document", per_doc, param, doc_mode),
    )
    if d_dense.chunks is not None and d_sparse.chunks is not None:
        scores = fusion.chunked_scores(
            q_dense.embeddings[0], d_dense.chunks, q_sparse.vectors[0], d_sparse.chunks, fuse.sparse_weight
        )
    else:
        scores = fusion.fused_scores(
            q_dense.embeddings[0], d_dense.embeddings, q_sparse.vectors[0], d_sparse.vectors, fuse.sparse_weight
        )
    tokens = q_dense.tokens + d_dense.tokens + q_sparse.tokens + d_sparse.tokens
    return RerankResult([], scores, tokens)


async def embed_types(
    handle: ModelHandle,
    texts: Sequence[str],
    options: EmbedOptions,
    limits: Limits,
    precisions: Sequence[Precision],
    param: str = "input",
) -> tuple[dict[Precision, npt.NDArray[np.generic]], int]:
    """One inference, several precisions (Cohere's ``embedding_types``), each as :func:`embed`
    would return it; ``options.precision`` is ignored."""
    result = await embed(handle, texts, replace(options, precision="float32"), limits, param)
    vectors = result.embeddings.astype(np.float32, copy=False)
    unit = handle.entry.spec.normalize if options.normalize is None else options.normalize
    ranges = unit_ranges(vectors.shape[1]) if unit else None
    return {p: quantize(vectors, p, ranges) for p in dict.fromkeys(precisions)}, result.tokens


async def similarity(
    handle: ModelHandle,
    source: str,
    sentences: Sequence[str],
    options: EmbedOptions,
    limits: Limits,
    *,
    source_param: str = "source_sentence",
    param: str = "sentences",
) -> tuple[npt.NDArray[np.float32], int]:
    """The model's similarity function (``similarity_fn_name``: cosine unless the model says
    otherwise) of ``source`` with each sentence (TEI's and HF's sentence-similarity), on the
    embeddings as the model outputs them: ``model.similarity(model.encode(...), ...)``."""
    check_text(source, limits, source_param)
    check_texts(sentences, limits, handle.entry.spec, param)
    raw = replace(options, normalize=False, precision="float32")
    query = await embed(handle, [source], raw, limits, source_param)
    others = await embed(handle, sentences, raw, limits, param)
    function = (await handle.model_settings()).similarity or "cosine"
    scores = similarity_scores(function, query.embeddings[0], others.embeddings)
    return scores, query.tokens + others.tokens


async def tokenize(
    handle: ModelHandle,
    texts: Sequence[str],
    *,
    add_special_tokens: bool = True,
    prompt_name: str | None = None,
    limits: Limits,
    param: str = "inputs",
) -> list[list[Token]]:
    """The tokens the model reads for each text (prompt included), untruncated."""
    check_texts(texts, limits, handle.entry.spec, param)
    engine = await handle.ready_engine()
    prompt = handle.settings(engine).resolve(None, prompt_name)
    check_prefixed(texts, prompt, limits, param, "prompt_name")
    inputs = [prompt + t for t in texts] if prompt else list(texts)
    return await handle.tokenize(  # no model work: not admitted by the model's wait
        lambda: engine.tokenizer.tokenize(inputs, add_special_tokens), sum(map(len, inputs)), compute=False
    )


async def decode(
    handle: ModelHandle,
    ids: Sequence[Sequence[int]],
    *,
    skip_special_tokens: bool = True,
    limits: Limits,
    param: str = "ids",
    single: bool = False,
) -> list[str]:
    """The text of each list of token ids, checked against the model's vocabulary. ``single``:
    the request sent one list (``ids`` holds it alone), so errors name ``param[j]``."""
    check_count(len(ids), limits, handle.entry.spec, param)
    engine = await handle.ready_engine()
    vocab = engine.tokenizer.vocab_size
    for i, row in enumerate(ids):
        where = param if single else f"{param}[{i}]"
        if not row:
            raise EmptyInput(f"{where} is an empty list of token ids", param=where)
        for j, token in enumerate(row):
            if not 0 <= token < vocab:
                raise InvalidInput(
                    f"{where}[{j}]: token id {token} is not in the vocabulary of model '{handle.id}' "
                    f"(ids 0 to {vocab - 1})",
                    param=f"{where}[{j}]",
                )
    return await handle.tokenize(
        lambda: engine.tokenizer.decode(ids, skip_special_tokens), sum(map(len, ids)), compute=False
    )


async def texts_from_ids(
    handle: ModelHandle, ids: Sequence[Sequence[int]], limits: Limits, param: str, *, single: bool = False
) -> list[str]:
    """Token-id inputs (ids of the model's own vocabulary) as the texts they stand for."""
    texts = await decode(handle, ids, limits=limits, param=param, single=single)
    for i, text in enumerate(texts):
        if not text.strip():
            where = param if single else f"{param}[{i}]"
            raise EmptyInput(f"{where}: these token ids decode to no text (only special tokens?)", param=where)
    return texts

"""The three tasks (dense, sparse, rerank) on top of the registry, free of HTTP.

Each task checks its inputs against the configured limits, resolves the prompt, tokenizes
once (the counts give usage and the over-long check when truncation is off; the truncated ids
go to the batcher), awaits the model's batcher, and post-processes the arrays. Dialects in
``api/`` only map their wire fields onto these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from embedserve.catalog import ModelSpec
from embedserve.engines.base import DenseEngine, RerankEngine, Side, SparseEngine, SparseVector, Tokens
from embedserve.errors import InputTooLong, InvalidInput, LimitExceeded
from embedserve.quantization import Precision, normalize, quantize, unit_ranges
from embedserve.registry import ModelHandle


@dataclass(frozen=True)
class Limits:
    """Server-wide request limits (a model's ``max_inputs`` overrides ``max_inputs``)."""

    max_inputs: int = 2048
    max_input_chars: int = 100_000


def check_texts(texts: Sequence[str], limits: Limits, spec: ModelSpec, param: str) -> None:
    """Refuse an empty list, empty strings and anything past the limits, naming the input."""
    if not texts:
        raise InvalidInput(f"'{param}' is an empty list; send at least one text", param=param)
    max_inputs = spec.max_inputs or limits.max_inputs
    if len(texts) > max_inputs:
        raise LimitExceeded(f"'{param}' has {len(texts)} items; the limit is {max_inputs} per request", param=param)
    for i, text in enumerate(texts):
        check_text(text, limits, f"{param}[{i}]")


def check_text(text: str, limits: Limits, where: str) -> None:
    """One text: not empty, within the character limit, and valid Unicode (no lone surrogates)."""
    if not text:
        raise InvalidInput(f"{where} is an empty string; every text needs at least one character", param=where)
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


def resolve_prompt(spec: ModelSpec, prompt: str | None, prompt_name: str | None) -> str | None:
    """A literal prompt, a named one from the catalogue, or the model's default prompt."""
    if prompt is not None and prompt_name is not None:
        raise InvalidInput("give options.prompt or options.prompt_name, not both", param="options.prompt_name")
    if prompt is not None:
        return prompt
    if prompt_name is not None:
        if prompt_name not in spec.prompts:
            names = ", ".join(sorted(spec.prompts)) or "(this model defines none)"
            raise InvalidInput(f"unknown prompt_name '{prompt_name}'; prompts: {names}", param="options.prompt_name")
        return spec.prompts[prompt_name]
    return spec.prompts[spec.default_prompt] if spec.default_prompt else None


def used_tokens(
    units: Sequence[Tokens], max_length: int, truncate: bool, where: Callable[[int], str], model_id: str
) -> int:
    """Tokens the model reads (after truncation), or an error naming an over-long input when truncation is off."""
    if not truncate:
        for i, unit in enumerate(units):
            if unit.original > max_length:
                raise InputTooLong(
                    f"{where(i)} has {unit.original} tokens; model '{model_id}' reads at most {max_length} "
                    "(truncate is false: shorten the input or allow truncation)",
                    param=where(i),
                )
    return sum(unit.cost for unit in units)


def _item(param: str) -> Callable[[int], str]:
    return lambda i: f"{param}[{i}]"


@dataclass(frozen=True)
class EmbedOptions:
    normalize: bool | None = None
    prompt: str | None = None
    prompt_name: str | None = None
    precision: Precision = "float32"
    dimensions: int | None = None
    truncate: bool = True
    truncation_direction: Side = "right"


@dataclass(frozen=True)
class DenseResult:
    embeddings: npt.NDArray[np.generic]
    tokens: int


async def embed(
    handle: ModelHandle, texts: Sequence[str], options: EmbedOptions, limits: Limits, param: str = "input"
) -> DenseResult:
    spec = handle.entry.spec
    check_texts(texts, limits, spec, param)
    prompt = resolve_prompt(spec, options.prompt, options.prompt_name)
    engine = await handle.ready_engine()
    dimension = engine.dimension or 0
    if options.dimensions is not None and not 1 <= options.dimensions <= dimension:
        raise InvalidInput(
            f"dimensions must be between 1 and {dimension} for model '{handle.id}'; got {options.dimensions}",
            param="dimensions",
        )

    assert isinstance(engine, DenseEngine)
    units = await handle.tokenize(lambda: engine.encode_texts(texts, prompt, options.truncation_direction))
    tokens = used_tokens(units, engine.max_length, options.truncate, _item(param), handle.id)
    vectors = np.stack(await handle.submit(units)).astype(np.float32, copy=False)
    if options.dimensions is not None:
        vectors = np.ascontiguousarray(vectors[:, : options.dimensions])
    unit = spec.normalize if options.normalize is None else options.normalize
    if unit:
        vectors = normalize(vectors)
    ranges = unit_ranges(vectors.shape[1]) if unit else None
    return DenseResult(quantize(vectors, options.precision, ranges), tokens)


@dataclass(frozen=True)
class SparseResult:
    vectors: list[SparseVector]
    tokens: int
    terms: list[list[str]] | None


async def embed_sparse(
    handle: ModelHandle,
    texts: Sequence[str],
    *,
    prompt: str | None = None,
    prompt_name: str | None = None,
    top_k: int | None = None,
    return_tokens: bool = False,
    truncate: bool = True,
    truncation_direction: Side = "right",
    limits: Limits,
    param: str = "input",
) -> SparseResult:
    spec = handle.entry.spec
    check_texts(texts, limits, spec, param)
    resolved = resolve_prompt(spec, prompt, prompt_name)

    engine = await handle.ready_engine()
    assert isinstance(engine, SparseEngine)
    units = await handle.tokenize(lambda: engine.encode_texts(texts, resolved, truncation_direction))
    tokens = used_tokens(units, engine.max_length, truncate, _item(param), handle.id)
    vectors = [_top_k(v, top_k) for v in await handle.submit(units)]
    terms = [engine.tokens(v.indices) for v in vectors] if return_tokens else None
    return SparseResult(vectors, tokens, terms)


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


async def rerank(
    handle: ModelHandle,
    query: str,
    documents: Sequence[str],
    *,
    top_n: int | None = None,
    truncate: bool = True,
    truncation_direction: Side = "right",
    limits: Limits,
) -> RerankResult:
    spec = handle.entry.spec
    check_text(query, limits, "query")
    check_texts(documents, limits, spec, "documents")

    engine = await handle.ready_engine()
    assert isinstance(engine, RerankEngine)
    prepared = await handle.tokenize(lambda: engine.encode_pairs(query, documents, truncation_direction))
    n_query = prepared.query_units

    def where(i: int) -> str:
        return "query" if i < n_query else f"documents[{i - n_query}]"

    tokens = used_tokens(prepared.units, engine.max_length, truncate, where, handle.id)
    outputs = await handle.submit(prepared.units)
    scores = engine.scores(np.stack(outputs), n_query)
    order = sorted(range(len(documents)), key=lambda i: -float(scores[i]))
    return RerankResult(order[:top_n] if top_n else order, scores, tokens)

"""Multi-vector tasks on top of the registry, free of HTTP: token vectors per text (ColBERT or
BGE-M3), the MaxSim alignment of a query and a document, and BGE-M3's three outputs at once.

Inputs are checked and counted as ``tasks`` does for the other types (the same limits, the same
errors naming the input); each side of a ColBERT is cut to its own length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.engines.base import SparseVector
from embedserve.engines.multi_vector import Alignment, InputKind, M3Output, MultiVectorEngine, TokenVectors, maxsim
from embedserve.errors import InvalidInput
from embedserve.registry import ModelHandle
from embedserve.tasks import Limits, Side, check_text, check_texts, used_tokens


@dataclass(frozen=True)
class MultiVectorResult:
    embeddings: list[TokenVectors]
    tokens: int
    texts: list[list[str]] | None  # each vector's token, when asked for


def _cut(vectors: TokenVectors, dimensions: int | None) -> TokenVectors:
    """The first ``dimensions`` of each vector, made unit length again (Matryoshka)."""
    if dimensions is None or dimensions >= vectors.vectors.shape[1]:
        return vectors
    cut = vectors.vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return TokenVectors(np.ascontiguousarray(cut / np.where(norms == 0, 1, norms), dtype=np.float32), vectors.ids)


async def _engine(handle: ModelHandle) -> MultiVectorEngine:
    engine = await handle.ready_engine()
    assert isinstance(engine, MultiVectorEngine)
    return engine


def check_dimensions(dimensions: int | None, engine: MultiVectorEngine, model_id: str) -> None:
    size = engine.dimension or 0
    if dimensions is not None and not 1 <= dimensions <= size:
        raise InvalidInput(
            f"dimensions must be between 1 and {size} for model '{model_id}'; got {dimensions}", param="dimensions"
        )


async def embed_multi(
    handle: ModelHandle,
    texts: Sequence[str],
    kind: InputKind,
    *,
    dimensions: int | None = None,
    truncate: bool = True,
    truncation_direction: Side = "right",
    return_tokens: bool = False,
    limits: Limits,
    param: str = "input",
) -> MultiVectorResult:
    """Token vectors of ``texts`` encoded as queries or documents."""
    check_texts(texts, limits, handle.entry.spec, param)
    engine = await _engine(handle)
    check_dimensions(dimensions, engine, handle.id)
    chars = sum(map(len, texts))
    units = await handle.tokenize(
        lambda: engine.encode_inputs(texts, kind, truncation_direction), chars, texts=len(texts)
    )
    limit = engine.side_limit(kind)
    tokens = used_tokens(units, limit, truncate, lambda i: f"{param}[{i}]", handle.id)
    vectors = [_cut(v, dimensions) for v in await handle.submit(units)]
    names = await asyncio.to_thread(lambda: [engine.token_texts(v.ids) for v in vectors]) if return_tokens else None
    return MultiVectorResult(vectors, tokens, names)


@dataclass(frozen=True)
class AlignResult:
    alignment: Alignment
    query_tokens: list[str]
    document_tokens: list[str]
    similarity: str
    tokens: int


async def align(handle: ModelHandle, query: str, document: str, *, limits: Limits) -> AlignResult:
    """MaxSim of ``query`` (as a query) and ``document`` (as a document): which document token
    each query token matched, with its similarity, and the score."""
    check_text(query, limits, "query")
    check_text(document, limits, "document")
    engine = await _engine(handle)
    units = await handle.tokenize(
        lambda: engine.encode_inputs([query], "query") + engine.encode_inputs([document], "document"),
        len(query) + len(document),
        texts=2,
    )
    q, d = await handle.submit(units)
    alignment = maxsim(q.vectors, d.vectors, engine.similarity)
    names = await asyncio.to_thread(lambda: (engine.token_texts(q.ids), engine.token_texts(d.ids)))
    return AlignResult(alignment, names[0], names[1], engine.similarity, sum(u.cost for u in units))


@dataclass(frozen=True)
class HybridResult:
    outputs: list[M3Output]
    tokens: int
    sparse_terms: list[list[str]] | None
    colbert_terms: list[list[str]] | None


async def embed_hybrid(
    handle: ModelHandle,
    texts: Sequence[str],
    outputs: Collection[str],
    *,
    truncate: bool = True,
    return_tokens: bool = False,
    limits: Limits,
    param: str = "input",
) -> HybridResult:
    """BGE-M3's dense, sparse and ColBERT outputs of ``texts`` from one forward pass each
    (``handle``: the model's ``hybrid`` view, see ``Registry.for_hybrid``)."""
    check_texts(texts, limits, handle.entry.spec, param)
    engine = await _engine(handle)
    units = await handle.tokenize(
        lambda: engine.encode_inputs(texts, "document"), sum(map(len, texts)), texts=len(texts)
    )
    tokens = used_tokens(units, engine.max_length, truncate, lambda i: f"{param}[{i}]", handle.id)
    results: list[M3Output] = await handle.submit(units)
    sparse_terms = colbert_terms = None
    if return_tokens:

        def names() -> tuple[list[list[str]] | None, list[list[str]] | None]:
            lexical = [engine.token_texts(o.sparse.indices) for o in results] if "sparse" in outputs else None
            late = [engine.token_texts(o.colbert.ids) for o in results] if "multi_vector" in outputs else None
            return lexical, late

        sparse_terms, colbert_terms = await asyncio.to_thread(names)
    return HybridResult(results, tokens, sparse_terms, colbert_terms)


def sparse_item(vector: SparseVector) -> dict[str, object]:
    """A sparse vector as the native API writes it."""
    return {"indices": vector.indices, "values": vector.values}

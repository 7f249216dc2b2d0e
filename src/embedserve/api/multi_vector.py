"""Multi-vector routes: Jina's ``POST /v1/multi-vector``, the native token vectors
(``/api/v1/embed_multi_vector``), the MaxSim alignment of a query and a document
(``/api/v1/multi_vector/align``, what the playground draws) and BGE-M3's three outputs from one
pass (``/api/v1/embed_hybrid``). Errors are in OpenAI's envelope, as on the other native routes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from embedserve import tasks_multi
from embedserve.api.deps import limits_of, registry_of
from embedserve.api.errors import dialect_route
from embedserve.api.openai import input_texts
from embedserve.api.responses import FastJSONResponse, base64_rows, usage
from embedserve.api.schemas_multi import (
    AlignRequest,
    AlignResponse,
    HybridRequest,
    HybridResponse,
    JinaMultiVectorRequest,
    JinaMultiVectorResponse,
    MultiVectorOptions,
    MultiVectorRequest,
    MultiVectorResponse,
)

router = APIRouter(tags=["multi-vector"], route_class=dialect_route("openai"))
MULTI_VECTOR = "multi-vector"


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@router.post("/v1/multi-vector", response_model=JinaMultiVectorResponse)
async def jina_multi_vector(body: JinaMultiVectorRequest, request: Request) -> FastJSONResponse:
    """Jina's multi-vector embeddings: one vector per token of each input, as a query or a document."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, MULTI_VECTOR)
    texts = await input_texts(handle, body.input, limits)
    result = await tasks_multi.embed_multi(
        handle, texts, body.input_type, dimensions=body.dimensions, truncate=body.truncate, limits=limits
    )
    data = []
    for i, item in enumerate(result.embeddings):
        vectors: Any = item.vectors
        if body.embedding_type == "base64":
            vectors = base64_rows(vectors.reshape(1, -1))[0]
        data.append({"object": "embeddings", "index": i, "embeddings": vectors})
    return FastJSONResponse({"model": handle.id, "object": "list", "usage": usage(result.tokens), "data": data})


@router.post("/api/v1/embed_multi_vector", response_model=MultiVectorResponse, response_model_exclude_none=True)
async def embed_multi_vector(body: MultiVectorRequest, request: Request) -> FastJSONResponse:
    """Token vectors of each input (a ColBERT's or BGE-M3's), encoded as a query or a document."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, MULTI_VECTOR)
    opts = body.options or MultiVectorOptions()
    result = await tasks_multi.embed_multi(
        handle,
        _as_list(body.input),
        body.input_type,
        dimensions=body.dimensions,
        truncate=body.truncate,
        return_tokens=opts.return_tokens,
        limits=limits,
    )
    data = []
    for i, item in enumerate(result.embeddings):
        entry: dict[str, Any] = {"object": "multi_vector", "index": i, "embeddings": item.vectors}
        if result.texts is not None:
            entry["tokens"] = result.texts[i]
        data.append(entry)
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": usage(result.tokens)})


@router.post("/api/v1/multi_vector/align", response_model=AlignResponse)
async def align(body: AlignRequest, request: Request) -> FastJSONResponse:
    """MaxSim of a query and a document: the document token each query token matched, and the score."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, MULTI_VECTOR)
    result = await tasks_multi.align(handle, body.query, body.document, limits=limits)
    found = result.alignment
    matches = [
        {"query_index": i, "document_index": int(j), "similarity": np.float32(s)}
        for i, (j, s) in enumerate(zip(found.matches, found.similarities, strict=True))
    ]
    return FastJSONResponse(
        {
            "object": "alignment",
            "model": handle.id,
            "score": found.score,
            "similarity": result.similarity,
            "query_tokens": result.query_tokens,
            "document_tokens": result.document_tokens,
            "matches": matches,
            "usage": usage(result.tokens),
        }
    )


@router.post("/api/v1/embed_hybrid", response_model=HybridResponse, response_model_exclude_none=True)
async def embed_hybrid(body: HybridRequest, request: Request) -> FastJSONResponse:
    """BGE-M3's dense, sparse and multi-vector outputs, any of them, from one forward pass per input."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_hybrid(body.model)
    wanted = set(body.outputs)
    opts = body.options or MultiVectorOptions()
    result = await tasks_multi.embed_hybrid(
        handle, _as_list(body.input), wanted, truncate=body.truncate, return_tokens=opts.return_tokens, limits=limits
    )
    data = []
    for i, out in enumerate(result.outputs):
        item: dict[str, Any] = {"object": "hybrid_embedding", "index": i}
        if "dense" in wanted:
            item["dense"] = out.dense
        if "sparse" in wanted:
            item["sparse"] = {"indices": out.sparse.indices, "values": out.sparse.values}
            if result.sparse_terms is not None:
                item["sparse"]["tokens"] = result.sparse_terms[i]
        if "multi_vector" in wanted:
            item["multi_vector"] = out.colbert.vectors
            if result.colbert_terms is not None:
                item["multi_vector_tokens"] = result.colbert_terms[i]
        data.append(item)
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": usage(result.tokens)})

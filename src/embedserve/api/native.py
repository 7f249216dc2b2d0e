"""The native API: OpenAI-shaped embeddings, sparse embeddings and rerank.

``/api/v1/embeddings`` also answers at ``/v1/embeddings`` so ``OpenAI(base_url=".../v1")`` works.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter

from embedserve import tasks
from embedserve.api.deps import LimitsDep, RegistryDep
from embedserve.api.responses import FastJSONResponse
from embedserve.api.schemas import (
    EmbeddingOptions,
    EmbeddingRequest,
    EmbeddingResponse,
    RerankRequest,
    RerankResponse,
    SparseOptions,
    SparseRequest,
    SparseResponse,
)
from embedserve.errors import InvalidInput

router = APIRouter(tags=["embeddings"])


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@router.post("/api/v1/embeddings", response_model=EmbeddingResponse)
@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, registry: RegistryDep, limits: LimitsDep) -> FastJSONResponse:
    """Dense embeddings, OpenAI's request and response (plus ``options`` and ``truncate``)."""
    handle = registry.for_task(body.model, "embeddings")
    opts = body.options or EmbeddingOptions()
    result = await tasks.embed(
        handle,
        _as_list(body.input),
        tasks.EmbedOptions(
            normalize=opts.normalize_embeddings,
            prompt=opts.prompt,
            prompt_name=opts.prompt_name,
            precision=opts.precision,
            dimensions=body.dimensions,
            truncate=body.truncate,
        ),
        limits,
    )
    rows: Any = result.embeddings
    if body.encoding_format == "base64":
        little = rows.astype(rows.dtype.newbyteorder("<"), copy=False)
        rows = [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": _usage(result.tokens)})


@router.post("/api/v1/embed_sparse", response_model=SparseResponse, response_model_exclude_none=True)
async def create_sparse_embeddings(body: SparseRequest, registry: RegistryDep, limits: LimitsDep) -> FastJSONResponse:
    """Sparse (SPLADE) embeddings: vocabulary indices, ascending, with their weights."""
    handle = registry.for_task(body.model, "sparse-embeddings")
    opts = body.options or SparseOptions()
    result = await tasks.embed_sparse(
        handle,
        _as_list(body.input),
        prompt=opts.prompt,
        prompt_name=opts.prompt_name,
        top_k=opts.top_k,
        return_tokens=opts.return_tokens,
        truncate=body.truncate,
        limits=limits,
    )
    data = []
    for i, vector in enumerate(result.vectors):
        item: dict[str, Any] = {
            "object": "sparse_embedding",
            "index": i,
            "indices": vector.indices,
            "values": vector.values,
        }
        if result.terms is not None:
            item["tokens"] = result.terms[i]
        data.append(item)
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": _usage(result.tokens)})


@router.post("/api/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def create_rerank(body: RerankRequest, registry: RegistryDep, limits: LimitsDep) -> FastJSONResponse:
    """Score documents against a query; results sorted by relevance, highest first."""
    if body.top_k is not None and body.top_n is not None and body.top_k != body.top_n:
        raise InvalidInput("top_k and top_n are the same setting; give one, or equal values", param="top_n")
    handle = registry.for_task(body.model, "rerank")
    result = await tasks.rerank(
        handle,
        body.query,
        body.documents,
        top_n=body.top_n or body.top_k,
        truncate=body.truncate,
        limits=limits,
    )
    results = []
    for i in result.order:
        item: dict[str, Any] = {"index": i, "relevance_score": np.float32(result.scores[i])}
        if body.return_documents:
            item["document"] = {"text": body.documents[i]}
        results.append(item)
    return FastJSONResponse({"object": "list", "model": handle.id, "results": results, "usage": _usage(result.tokens)})

"""The native API's sparse embeddings and rerank (its OpenAI-shaped embeddings are in ``openai.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from embedserve import long_inputs, tasks
from embedserve.api.deps import limits_of, registry_of
from embedserve.api.errors import dialect_route
from embedserve.api.responses import FastJSONResponse, usage
from embedserve.api.schemas import (
    RerankRequest,
    RerankResponse,
    SparseOptions,
    SparseRequest,
    SparseResponse,
)
from embedserve.errors import InvalidInput

router = APIRouter(tags=["embeddings"], route_class=dialect_route("openai"))


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


@router.post("/api/v1/embed_sparse", response_model=SparseResponse, response_model_exclude_none=True)
async def create_sparse_embeddings(body: SparseRequest, request: Request) -> FastJSONResponse:
    """Sparse (SPLADE) embeddings: vocabulary indices, ascending, with their weights."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, "sparse-embeddings")
    opts = body.options or SparseOptions()
    options = tasks.SparseOptions(
        prompt=opts.prompt,
        prompt_name=opts.prompt_name,
        top_k=opts.top_k,
        return_tokens=opts.return_tokens,
        long_inputs=long_inputs.choose(body.long_inputs, body.truncate),
        return_chunks=opts.return_chunks,
    )
    result = await tasks.embed_sparse(handle, _as_list(body.input), options, limits)
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
        if result.chunks is not None and result.spans is not None:
            item["chunks"] = [
                {"indices": v.indices, "values": v.values, "start": start, "end": end}
                for v, (start, end) in zip(result.chunks[i], result.spans[i], strict=True)
            ]
        data.append(item)
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": usage(result.tokens)})


@router.post("/api/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def create_rerank(body: RerankRequest, request: Request) -> FastJSONResponse:
    """Score documents against a query; results sorted by relevance, highest first."""
    registry, limits = registry_of(request), limits_of(request)
    if body.top_k is not None and body.top_n is not None and body.top_k != body.top_n:
        raise InvalidInput("top_k and top_n are the same setting; give one, or equal values", param="top_n")
    handle = registry.for_task(body.model, "rerank")
    options = tasks.RerankOptions(
        top_n=body.top_n or body.top_k,
        long_inputs=long_inputs.choose(body.long_inputs, body.truncate),
        max_chunks_per_doc=body.max_chunks_per_doc,
    )
    result = await tasks.rerank(handle, body.query, body.documents, options, limits)
    results = []
    for i in result.order:
        item: dict[str, Any] = {"index": i, "relevance_score": np.float32(result.scores[i])}
        if body.return_documents:
            item["document"] = {"text": body.documents[i]}
        results.append(item)
    return FastJSONResponse({"object": "list", "model": handle.id, "results": results, "usage": usage(result.tokens)})

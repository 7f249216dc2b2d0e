"""Cohere's rerank and embed, v1 and v2 (``/v1/rerank`` serves Jina's rerank too).

Point ``cohere.ClientV2(base_url="http://host:port")`` (or ``cohere.Client``) at the server.
Errors are Cohere's ``{"message"}``: 400 for any invalid request, 404, 503, 500.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from embedserve import tasks
from embedserve.api.deps import limits_of, registry_of
from embedserve.api.errors import dialect_route
from embedserve.api.responses import FastJSONResponse, base64_rows, usage
from embedserve.api.schemas_cohere import (
    EmbeddingType,
    EmbedV1Request,
    EmbedV2Request,
    RerankV1Request,
    RerankV2Request,
)
from embedserve.catalog import LongInputs
from embedserve.errors import InvalidInput
from embedserve.model_settings import purpose
from embedserve.quantization import Precision
from embedserve.registry import Registry

router = APIRouter(tags=["cohere"], route_class=dialect_route("cohere"))

# Cohere's input_type → the prompt names that serve it, best first (none defined: the default prompt).
INPUT_TYPE_PROMPTS: dict[str, tuple[str, ...]] = {
    "search_query": purpose("search_query", of="query"),
    "search_document": purpose("search_document", of="document"),
    "classification": purpose("classification", of="classification"),
    "clustering": purpose("clustering", of="clustering"),
}
# Cohere's truncate → long_inputs and the end cut; CHUNK is embedserve's (the SDK passes any string)
TRUNCATE: dict[str, tuple[LongInputs, tasks.Side]] = {
    "NONE": ("error", "right"),
    "START": ("truncate", "left"),
    "END": ("truncate", "right"),
    "CHUNK": ("chunk", "right"),
}
PRECISION: dict[str, Precision] = {
    "float": "float32",
    "base64": "float32",
    "int8": "int8",
    "uint8": "uint8",
    "binary": "binary",
    "ubinary": "ubinary",
}


def _meta(version: str, **billed: int) -> dict[str, Any]:
    return {"api_version": {"version": version}, "billed_units": billed}


def _search_units(documents: int) -> int:
    return max(1, math.ceil(documents / 100))  # Cohere bills a search unit per 100 documents


def _document_text(document: str | dict[str, str], rank_fields: Sequence[str] | None, i: int) -> str:
    if isinstance(document, str):
        return document
    fields = rank_fields or ["text"]
    missing = [f for f in fields if f not in document]
    if missing:
        where = f"documents[{i}]"
        raise InvalidInput(f"{where} has no field '{missing[0]}' (rank_fields: {', '.join(fields)})", param=where)
    if len(fields) == 1:
        return document[fields[0]]
    return "\n".join(f"{f}: {document[f]}" for f in fields)


@router.post("/v1/rerank")
async def rerank_v1(body: RerankV1Request, request: Request) -> FastJSONResponse:
    """Cohere's v1 rerank; also Jina's (``model`` and ``usage`` are in the response)."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, "rerank")
    texts = [_document_text(d, body.rank_fields, i) for i, d in enumerate(body.documents)]
    options = tasks.RerankOptions(top_n=body.top_n, max_chunks_per_doc=body.max_chunks_per_doc)
    result = await tasks.rerank(handle, body.query, texts, options, limits)
    results = []
    for i in result.order:
        item: dict[str, Any] = {"index": i, "relevance_score": np.float32(result.scores[i])}
        if body.return_documents:
            document = body.documents[i]
            item["document"] = {"text": document} if isinstance(document, str) else document
        results.append(item)
    return FastJSONResponse(
        {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": _meta("1", search_units=_search_units(len(texts))),
            "model": handle.id,
            "usage": usage(result.tokens),
        }
    )


@router.post("/v2/rerank")
async def rerank_v2(body: RerankV2Request, request: Request) -> FastJSONResponse:
    """Cohere's v2 rerank: string documents, ``max_tokens_per_doc``, results without documents."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, "rerank")
    options = tasks.RerankOptions(top_n=body.top_n, max_tokens_per_doc=body.max_tokens_per_doc)
    result = await tasks.rerank(handle, body.query, body.documents, options, limits)
    results = [{"index": i, "relevance_score": np.float32(result.scores[i])} for i in result.order]
    return FastJSONResponse(
        {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": _meta("2", search_units=_search_units(len(body.documents))),
        }
    )


async def _embed(
    body: EmbedV1Request, registry: Registry, limits: tasks.Limits, types: Sequence[EmbeddingType]
) -> tuple[dict[str, Any], int]:
    handle = registry.for_task(body.model, "embeddings")
    if body.input_type == "image":
        raise InvalidInput("input_type image is not supported: embedserve embeds texts", param="input_type")
    mode: LongInputs | None = None
    side: tasks.Side = "right"
    if body.truncate is not None:
        mode, side = TRUNCATE[body.truncate]
    prompt = None
    if body.input_type:
        prompt = (await handle.model_settings()).prompt_name_for(INPUT_TYPE_PROMPTS[body.input_type])
    options = tasks.EmbedOptions(
        prompt_name=prompt,
        long_inputs=mode,
        truncation_direction=side,
        dimensions=body.output_dimension if isinstance(body, EmbedV2Request) else None,
        max_tokens=body.max_tokens if isinstance(body, EmbedV2Request) else None,
    )
    precisions = [PRECISION[t] for t in types]
    arrays, tokens = await tasks.embed_types(handle, body.texts, options, limits, precisions, param="texts")
    embeddings: dict[str, Any] = {}
    for kind, precision in zip(types, precisions, strict=True):
        embeddings[kind] = base64_rows(arrays[precision]) if kind == "base64" else arrays[precision]
    return embeddings, tokens


@router.post("/v1/embed")
async def embed_v1(body: EmbedV1Request, request: Request) -> FastJSONResponse:
    """Cohere's v1 embed: ``embeddings_floats``, or ``embeddings_by_type`` when types are given."""
    registry, limits = registry_of(request), limits_of(request)
    embeddings, tokens = await _embed(body, registry, limits, body.embedding_types or ["float"])
    by_type = body.embedding_types is not None
    return FastJSONResponse(
        {
            "id": str(uuid.uuid4()),
            "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
            "embeddings": embeddings if by_type else embeddings["float"],
            "texts": body.texts,
            "meta": _meta("1", input_tokens=tokens),
        }
    )


@router.post("/v2/embed")
async def embed_v2(body: EmbedV2Request, request: Request) -> FastJSONResponse:
    """Cohere's v2 embed: always ``embeddings_by_type`` (float unless ``embedding_types`` says otherwise)."""
    registry, limits = registry_of(request), limits_of(request)
    embeddings, tokens = await _embed(body, registry, limits, body.embedding_types or ["float"])
    return FastJSONResponse(
        {
            "id": str(uuid.uuid4()),
            "response_type": "embeddings_by_type",
            "embeddings": embeddings,
            "texts": body.texts,
            "meta": _meta("2", input_tokens=tokens),
        }
    )

"""Hugging Face text-embeddings-inference (TEI): ``/embed``, ``/embed_sparse``, ``/rerank``,
``/similarity``, ``/tokenize``, ``/decode``, ``/info`` and ``POST /``.

TEI requests name no model: each route serves its task's default model (the catalogue entry
marked ``default``, else the first of its type) unless the body's ``model`` field or the
``X-Model`` header names another. ``/info``, ``/tokenize``, ``/decode`` and ``POST /`` serve
the catalogue's default model (the first marked ``default``, else the first), and ``POST /``
embeds, embeds sparse or reranks by that model's type, as TEI does. Inputs are truncated by
default (TEI's ``--auto-truncate``). Errors are TEI's ``{"error", "error_type"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Body, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from embedserve import __version__, long_inputs, tasks
from embedserve.api import schemas_tei as s
from embedserve.api.deps import limits_of, registry_of, settings_of
from embedserve.api.errors import dialect_route
from embedserve.api.openai import input_texts
from embedserve.api.responses import FastJSONResponse, base64_rows
from embedserve.errors import InvalidInput, clip
from embedserve.registry import ModelHandle, Registry

router = APIRouter(tags=["tei"], route_class=dialect_route("tei"))
ModelHeader = Annotated[
    str | None, Header(alias="x-model", description="catalogue id of the model to use (or the body's model field)")
]
B = TypeVar("B", bound=BaseModel)


def _model_id(body_model: str | None, header: str | None) -> str | None:
    if body_model and header and body_model != header:
        raise InvalidInput(
            f"the model field ('{clip(body_model)}') and the X-Model header ('{clip(header)}') disagree", param="model"
        )
    return body_model or header


def _handle(registry: Registry, model_type: str | None, body_model: str | None, header: str | None) -> ModelHandle:
    """The named model, checked to serve ``model_type``; else that type's default (any type: the catalogue's)."""
    model_id = _model_id(body_model, header)
    if model_type is not None:
        return registry.for_task(model_id, model_type)
    return registry.get(model_id or registry.catalog.default_id() or "")


def _side(direction: str) -> tasks.Side:
    return "left" if direction.lower() == "left" else "right"


def _headers(tokens: int) -> dict[str, str]:
    return {"x-prompt-tokens": str(tokens)}


@router.post("/embed")
async def embed(body: s.EmbedRequest, request: Request, x_model: ModelHeader = None) -> FastJSONResponse:
    """Dense embeddings: ``[[float, ...], ...]``, one row per input."""
    registry, limits = registry_of(request), limits_of(request)
    handle = _handle(registry, "embeddings", body.model, x_model)
    texts = await input_texts(handle, body.inputs, limits, "inputs")
    options = tasks.EmbedOptions(
        normalize=body.normalize,
        prompt_name=body.prompt_name,
        dimensions=body.dimensions,
        long_inputs=long_inputs.choose(None, body.truncate),
        truncation_direction=_side(body.truncation_direction),
    )
    result = await tasks.embed(handle, texts, options, limits, param="inputs")
    rows: Any = base64_rows(result.embeddings) if body.encoding_format == "base64" else result.embeddings
    return FastJSONResponse(rows, headers=_headers(result.tokens))


@router.post("/embed_sparse")
async def embed_sparse(body: s.SparseRequest, request: Request, x_model: ModelHeader = None) -> FastJSONResponse:
    """Sparse embeddings: ``[[{"index", "value"}, ...], ...]``, indices ascending."""
    registry, limits = registry_of(request), limits_of(request)
    handle = _handle(registry, "sparse-embeddings", body.model, x_model)
    texts = await input_texts(handle, body.inputs, limits, "inputs")
    options = tasks.SparseOptions(
        prompt_name=body.prompt_name,
        long_inputs=long_inputs.choose(None, body.truncate),
        truncation_direction=_side(body.truncation_direction),
    )
    result = await tasks.embed_sparse(handle, texts, options, limits, param="inputs")
    rows = [
        [{"index": int(i), "value": float(v)} for i, v in zip(vec.indices, vec.values, strict=True)]
        for vec in result.vectors
    ]
    return FastJSONResponse(rows, headers=_headers(result.tokens))


@router.post("/rerank")
async def rerank(body: s.RerankRequest, request: Request, x_model: ModelHeader = None) -> FastJSONResponse:
    """``[{"index", "score", "text"?}, ...]``, highest score first."""
    registry, limits = registry_of(request), limits_of(request)
    handle = _handle(registry, "rerank", body.model, x_model)
    options = tasks.RerankOptions(
        long_inputs=long_inputs.choose(None, body.truncate),
        truncation_direction=_side(body.truncation_direction),
        raw_scores=body.raw_scores,
    )
    result = await tasks.rerank(handle, body.query, body.texts, options, limits, param="texts")
    out = []
    for i in result.order:
        item: dict[str, Any] = {"index": i, "score": np.float32(result.scores[i])}
        if body.return_text:
            item["text"] = body.texts[i]
        out.append(item)
    return FastJSONResponse(out, headers=_headers(result.tokens))


@router.post("/similarity")
async def similarity(body: s.SimilarityRequest, request: Request, x_model: ModelHeader = None) -> FastJSONResponse:
    """The model's similarity (``similarity_fn_name``, cosine by default) of ``inputs.source_sentence``
    with each of ``inputs.sentences``: ``[float, ...]``."""
    registry, limits = registry_of(request), limits_of(request)
    handle = _handle(registry, "embeddings", body.model, x_model)
    params = body.parameters or s.SimilarityParameters()
    options = tasks.EmbedOptions(
        prompt_name=params.prompt_name,
        long_inputs=long_inputs.choose(None, params.truncate),
        truncation_direction=_side(params.truncation_direction),
    )
    scores, tokens = await tasks.similarity(
        handle,
        body.inputs.source_sentence,
        body.inputs.sentences,
        options,
        limits,
        source_param="inputs.source_sentence",
        param="inputs.sentences",
    )
    return FastJSONResponse(scores, headers=_headers(tokens))


@router.post("/tokenize")
async def tokenize(body: s.TokenizeRequest, request: Request, x_model: ModelHeader = None) -> FastJSONResponse:
    """``[[{"id", "text", "special", "start", "stop"}, ...], ...]``; offsets in UTF-8 bytes, as TEI."""
    registry, limits = registry_of(request), limits_of(request)
    handle = _handle(registry, None, body.model, x_model)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    tokenized = await tasks.tokenize(
        handle, texts, add_special_tokens=body.add_special_tokens, prompt_name=body.prompt_name, limits=limits
    )
    return FastJSONResponse(tokenized)  # Token dataclasses: orjson writes TEI's objects, no Python per token


@router.post("/decode")
async def decode(body: s.DecodeRequest, request: Request, x_model: ModelHeader = None) -> FastJSONResponse:
    """``["text", ...]``, one per list of ids."""
    registry, limits = registry_of(request), limits_of(request)
    handle = _handle(registry, None, body.model, x_model)
    single = bool(body.ids) and isinstance(body.ids[0], int)
    ids: Any = [body.ids] if single or not body.ids else body.ids
    texts = await tasks.decode(handle, ids, skip_special_tokens=body.skip_special_tokens, limits=limits, single=single)
    return FastJSONResponse(texts)


@router.get("/info")
async def info(
    request: Request,
    x_model: ModelHeader = None,
    model: Annotated[str | None, Query(description="catalogue id (or the X-Model header)")] = None,
) -> FastJSONResponse:
    """TEI's ``Info`` for the default model (or the one named)."""
    registry, limits, settings = registry_of(request), limits_of(request), settings_of(request)
    handle = _handle(registry, None, model, x_model)
    described = handle.info()
    spec = handle.entry.spec
    model_type: dict[str, Any]
    if spec.type == "rerank":
        model_type = {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    else:
        model_type = {"embedding": {"pooling": "splade" if spec.type == "sparse-embeddings" else "mean"}}
    max_inputs = spec.max_inputs or limits.max_inputs
    max_length = described["max_length"]
    return FastJSONResponse(
        {
            "model_id": handle.id,
            "model_sha": spec.revision,
            "model_dtype": "int8" if spec.quantize == "int8" else spec.dtype,
            "model_type": model_type,
            "prompts": {name: p["text"] for name, p in described["prompt_texts"].items()} or None,
            # the model's queue bound: past it, 429 (a request queues at least one input)
            "max_concurrent_requests": spec.batching.max_queue,
            "max_input_length": max_length,
            "max_batch_tokens": max_inputs * (max_length or 512),
            "max_batch_requests": None,
            "max_client_batch_size": max_inputs,
            "auto_truncate": True,
            "tokenization_workers": settings.tokenizer_threads,
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "embedserve": {"model": described, "models": list(registry.models)},
        }
    )


def _parse(model: type[B], data: Any) -> B:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in exc.errors()]) from None


@router.post("/")
async def predict(
    body: Annotated[dict[str, Any], Body(description="the body of /embed, /embed_sparse or /rerank")],
    request: Request,
    x_model: ModelHeader = None,
) -> FastJSONResponse:
    """TEI's compatibility route: embed, embed sparse or rerank, by the type of the model."""
    model = body.get("model") if isinstance(body.get("model"), str) else None
    handle = _handle(registry_of(request), None, model, x_model)
    kind = handle.entry.spec.type
    if kind == "rerank":
        return await rerank(_parse(s.RerankRequest, body), request, handle.id)
    if kind == "sparse-embeddings":
        return await embed_sparse(_parse(s.SparseRequest, body), request, handle.id)
    return await embed(_parse(s.EmbedRequest, body), request, handle.id)

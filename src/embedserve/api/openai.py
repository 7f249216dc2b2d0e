"""OpenAI's ``POST /v1/embeddings`` (also at ``/api/v1/embeddings``), with Jina's extras.

Besides OpenAI's fields (texts or token ids, base64 or float, ``dimensions``) the route reads
Jina's ``task``, ``embedding_type``, ``normalized`` and ``late_chunking``, so Jina clients work
against the same URL. Errors are in OpenAI's envelope.
"""

from __future__ import annotations

from typing import Any, cast

from fastapi import APIRouter, Request

from embedserve import long_inputs, tasks
from embedserve.api.deps import limits_of, registry_of
from embedserve.api.errors import dialect_route
from embedserve.api.responses import FastJSONResponse, base64_rows, usage
from embedserve.api.schemas import EmbeddingOptions, EmbeddingRequest, EmbeddingResponse, is_token_ids
from embedserve.errors import InvalidInput
from embedserve.model_settings import purpose
from embedserve.quantization import Precision
from embedserve.registry import ModelHandle

router = APIRouter(tags=["embeddings"], route_class=dialect_route("openai"))

# Jina's task → the prompt names that serve it, best first (none defined: the default prompt).
JINA_TASK_PROMPTS: dict[str, tuple[str, ...]] = {
    "retrieval.query": purpose("retrieval.query", of="query"),
    "retrieval.passage": purpose("retrieval.passage", of="document"),
    "text-matching": purpose("text-matching", of="similarity"),
    "classification": purpose("classification", of="classification"),
    "separation": purpose("separation", of="clustering"),
    "clustering": purpose("clustering", of="clustering"),
    "code.query": purpose("code.query", of="query"),
    "code.passage": purpose("code.passage", of="document"),
}


@router.post("/api/v1/embeddings", response_model=EmbeddingResponse)
@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> FastJSONResponse:
    """Dense embeddings, OpenAI's request and response (plus ``options``, ``truncate`` and Jina's fields)."""
    registry, limits = registry_of(request), limits_of(request)
    handle = registry.for_task(body.model, "embeddings")
    texts = await input_texts(handle, body.input, limits)
    options, encoding = await embed_options(body, handle)
    result = await tasks.embed(handle, texts, options, limits)

    def encoded(array: Any) -> Any:
        return base64_rows(array) if encoding == "base64" else array

    data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(encoded(result.embeddings))]
    if result.chunks is not None and result.spans is not None:
        for item, rows, spans in zip(data, result.chunks, result.spans, strict=True):
            item["chunks"] = long_inputs.describe_chunks(spans, encoded(rows), "embedding")
    return FastJSONResponse({"object": "list", "data": data, "model": handle.id, "usage": usage(result.tokens)})


async def input_texts(
    handle: ModelHandle,
    value: str | list[str] | list[int] | list[list[int]],
    limits: tasks.Limits,
    param: str = "input",
) -> list[str]:
    """The request's texts; token ids (of the model's own vocabulary) are decoded to text."""
    if isinstance(value, str):
        return [value]
    if not is_token_ids(value):
        return cast(list[str], value)
    if isinstance(value[0], int):
        return await tasks.texts_from_ids(handle, [value], limits, param, single=True)
    return await tasks.texts_from_ids(handle, cast(list[list[int]], value), limits, param)


async def embed_options(body: EmbeddingRequest, handle: ModelHandle) -> tuple[tasks.EmbedOptions, str]:
    """OpenAI's, embedserve's and Jina's fields as one set of options, and the encoding; a
    setting given twice with different values is a 422 naming the Jina field. A Jina ``task``
    picks one of the model's prompts (its own and the catalogue's)."""
    opts = body.options or EmbeddingOptions()
    given = body.model_fields_set
    if body.late_chunking:
        raise InvalidInput("late_chunking is not supported; send it as false or leave it out", param="late_chunking")
    normalize = opts.normalize_embeddings
    if body.normalized is not None:
        if normalize is not None and normalize != body.normalized:
            raise InvalidInput("normalized and options.normalize_embeddings disagree; give one", param="normalized")
        normalize = body.normalized
    prompt_name = opts.prompt_name
    if body.task is not None:
        if opts.prompt is not None or opts.prompt_name is not None:
            raise InvalidInput("give task or options.prompt / options.prompt_name, not both", param="task")
        prompt_name = (await handle.model_settings()).prompt_name_for(JINA_TASK_PROMPTS[body.task])
    precision: Precision = opts.precision
    encoding = body.encoding_format
    kind = body.embedding_type
    if kind == "base64":
        if "encoding_format" in given and encoding != "base64":
            raise InvalidInput("embedding_type base64 and encoding_format float disagree", param="embedding_type")
        encoding = "base64"
    elif kind is not None:
        wanted: Precision = "float32" if kind == "float" else kind
        if opts.precision not in ("float32", wanted):
            raise InvalidInput(
                f"embedding_type {kind} and options.precision {opts.precision} disagree", param="embedding_type"
            )
        precision = wanted
    options = tasks.EmbedOptions(
        normalize=normalize,
        prompt=opts.prompt,
        prompt_name=prompt_name,
        precision=precision,
        dimensions=body.dimensions,
        long_inputs=long_inputs.choose(body.long_inputs, body.truncate),
        return_chunks=opts.return_chunks,
    )
    return options, encoding

"""Request bodies of Cohere's rerank (v1, v2) and embed (v1, v2), field names as Cohere has them.

Responses are built as plain dicts in ``cohere.py``; Cohere's SDK reads them into its own models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo
from pydantic_core import PydanticCustomError

from embedserve.api.schemas import Request, TextList, _json_type

InputType = Literal["search_document", "search_query", "classification", "clustering", "image"]
EmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]
Truncate = Literal["NONE", "START", "END", "CHUNK"]


def _documents(value: Any, info: ValidationInfo) -> Any:
    """v1 documents: strings, or objects of string fields (``{"text": ...}`` by default)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                for key, field in item.items():
                    if not isinstance(field, str):
                        raise PydanticCustomError(
                            "string_type",
                            "{param} must be a string, got {got}",
                            {"param": f"documents[{i}].{key}", "got": _json_type(field)},
                        )
            elif not isinstance(item, str):
                raise PydanticCustomError(
                    "string_type",
                    "{param} must be a string or an object of strings, got {got}",
                    {"param": f"documents[{i}]", "got": _json_type(item)},
                )
    return value


class RerankV1Request(Request):
    """Cohere's v1 rerank, which Jina's rerank API shares."""

    query: str
    documents: Annotated[list[str | dict[str, str]], BeforeValidator(_documents)] = Field(
        description='strings, or objects whose rank_fields are read ({"text": ...} by default)'
    )
    model: str | None = Field(default=None, description="catalogue id; default: the default rerank model")
    top_n: int | None = Field(default=None, ge=1, description="return the n best; default: all")
    rank_fields: list[str] | None = Field(default=None, min_length=1, description="object fields to rank on, in order")
    return_documents: bool = Field(default=False, description="add each document to its result (Cohere's default)")
    max_chunks_per_doc: int | None = Field(
        default=None, ge=1, description="read each document in windows, at most this many; it scores its best"
    )


class RerankV2Request(Request):
    query: str
    documents: TextList
    model: str | None = Field(default=None, description="catalogue id; default: the default rerank model")
    top_n: int | None = Field(default=None, ge=1)
    max_tokens_per_doc: int | None = Field(default=None, ge=1, description="cut each document to this many tokens")
    priority: int | None = Field(default=None, description="accepted and ignored (a scheduling hint)")


class EmbedV1Request(Request):
    texts: TextList
    model: str | None = Field(default=None, description="catalogue id; default: the default embeddings model")
    input_type: InputType | None = Field(default=None, description="picks the model's prompt of that purpose")
    embedding_types: list[EmbeddingType] | None = Field(default=None, min_length=1)
    truncate: Truncate | None = Field(
        default=None,
        description="NONE: refuse over-long texts; START or END: cut there; CHUNK (embedserve's): windows, pooled; "
        "default: the model's long_inputs (END unless the catalogue says otherwise)",
    )


class EmbedV2Request(EmbedV1Request):
    output_dimension: int | None = Field(default=None, ge=1, description="keep the first N dimensions")
    max_tokens: int | None = Field(default=None, ge=1, description="read at most this many tokens of each text")
    priority: int | None = Field(default=None, description="accepted and ignored (a scheduling hint)")

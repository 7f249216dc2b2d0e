"""Request bodies of Hugging Face text-embeddings-inference (TEI), field names as TEI has them.

TEI serves one model; embedserve serves a catalogue, so each body also takes an optional
``model`` (the ``X-Model`` header does the same for clients that cannot add a field).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from embedserve.api.schemas import EmbeddingInput, Request, TextInput, TextList

Direction = Literal["right", "left", "Right", "Left"]
MODEL_FIELD = Field(default=None, description="catalogue id (or the X-Model header); default: the task's default model")
TRUNCATE_FIELD = Field(
    default=None, description="cut inputs longer than the model reads (default: true, auto-truncate)"
)


class TEIRequest(Request):
    model: str | None = MODEL_FIELD


class EmbedRequest(TEIRequest):
    inputs: EmbeddingInput
    normalize: bool = True
    truncate: bool | None = TRUNCATE_FIELD
    truncation_direction: Direction = "right"
    prompt_name: str | None = None
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] = "float"


class SparseRequest(TEIRequest):
    inputs: EmbeddingInput
    truncate: bool | None = TRUNCATE_FIELD
    truncation_direction: Direction = "right"
    prompt_name: str | None = None


class RerankRequest(TEIRequest):
    query: str
    texts: TextList
    truncate: bool | None = TRUNCATE_FIELD
    truncation_direction: Direction = "right"
    raw_scores: bool = Field(default=False, description="the model's scores before its activation (logits)")
    return_text: bool = False


class SimilarityInputs(Request):
    source_sentence: str
    sentences: TextList


class SimilarityParameters(Request):
    truncate: bool | None = TRUNCATE_FIELD
    truncation_direction: Direction = "right"
    prompt_name: str | None = None


class SimilarityRequest(TEIRequest):
    inputs: SimilarityInputs
    parameters: SimilarityParameters | None = None


class TokenizeRequest(TEIRequest):
    inputs: TextInput
    add_special_tokens: bool = True
    prompt_name: str | None = None


class DecodeRequest(TEIRequest):
    ids: list[int] | list[list[int]]
    skip_special_tokens: bool = True

"""Request and response bodies of the multi-vector routes: Jina's ``/v1/multi-vector`` and the
native token vectors, alignment and BGE-M3 hybrid routes (see ``multi_vector.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from embedserve.api.schemas import EmbeddingInput, Request, TextInput, Usage

InputType = Literal["query", "document"]
HybridOutput = Literal["dense", "sparse", "multi_vector"]
HYBRID_OUTPUTS: tuple[HybridOutput, ...] = ("dense", "sparse", "multi_vector")


class JinaMultiVectorRequest(Request):
    """Jina's multi-vector request (jina-colbert-v2), plus embedserve's ``truncate``."""

    input: EmbeddingInput = Field(description='a string, a list of strings, or Jina\'s {"text": ...} objects')
    model: str | None = Field(default=None, description="catalogue id; default: the default multi-vector model")
    input_type: InputType = Field(default="document", description="encode as queries or as documents")
    embedding_type: Literal["float", "base64"] = Field(
        default="float", description="base64: each text's vectors as one little-endian float32 array, row by row"
    )
    dimensions: int | None = Field(default=None, ge=1, description="keep the first N dimensions, then unit length")
    truncate: bool = Field(default=True, description="false: texts longer than their side's length are a 422")
    user: str | None = None


class JinaMultiVectorItem(BaseModel):
    object: Literal["embeddings"] = "embeddings"
    index: int
    embeddings: list[list[float]] | str


class JinaMultiVectorResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    usage: Usage
    data: list[JinaMultiVectorItem]


class MultiVectorOptions(Request):
    return_tokens: bool = Field(default=False, description="add the token each vector stands for")


class MultiVectorRequest(Request):
    input: TextInput
    model: str | None = Field(default=None, description="catalogue id; default: the default multi-vector model")
    input_type: InputType = "document"
    dimensions: int | None = Field(default=None, ge=1, description="keep the first N dimensions, then unit length")
    truncate: bool = True
    user: str | None = None
    options: MultiVectorOptions | None = None


class MultiVector(BaseModel):
    object: Literal["multi_vector"] = "multi_vector"
    index: int
    embeddings: list[list[float]]
    tokens: list[str] | None = None


class MultiVectorResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[MultiVector]
    model: str
    usage: Usage


class AlignRequest(Request):
    query: str
    document: str
    model: str | None = Field(default=None, description="catalogue id; default: the default multi-vector model")


class Match(BaseModel):
    query_index: int
    document_index: int = Field(description="the document token this query token matched best")
    similarity: float


class AlignResponse(BaseModel):
    object: Literal["alignment"] = "alignment"
    model: str
    score: float = Field(description="MaxSim: the matches' similarities summed (maxsim) or averaged (meanmaxsim)")
    similarity: Literal["maxsim", "meanmaxsim"]
    query_tokens: list[str]
    document_tokens: list[str]
    matches: list[Match]
    usage: Usage


class HybridRequest(Request):
    """BGE-M3: any of its three outputs for each input, from one forward pass."""

    input: TextInput
    model: str | None = Field(default=None, description="catalogue id of a bge-m3 model; default: the first")
    outputs: list[HybridOutput] = Field(
        default_factory=lambda: list(HYBRID_OUTPUTS), min_length=1, description="what to return"
    )
    truncate: bool = True
    user: str | None = None
    options: MultiVectorOptions | None = None


class SparsePart(BaseModel):
    indices: list[int]
    values: list[float]
    tokens: list[str] | None = None


class HybridItem(BaseModel):
    object: Literal["hybrid_embedding"] = "hybrid_embedding"
    index: int
    dense: list[float] | None = None
    sparse: SparsePart | None = None
    multi_vector: list[list[float]] | None = None
    multi_vector_tokens: list[str] | None = None


class HybridResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[HybridItem]
    model: str
    usage: Usage

"""Request and response bodies of the native (OpenAI-shaped) API.

Requests are strict: unknown fields, wrong JSON types and values out of range are 422s that
name the field. Responses are documented here for /docs but built as plain dicts holding
numpy arrays, serialized by orjson (see ``responses.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from embedserve.catalog import LongInputs
from embedserve.quantization import Precision
from embedserve.registry import ModelState

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _strings(value: Any, info: ValidationInfo) -> Any:
    """Name the first non-string item exactly (``input[3]``) instead of pydantic's union noise."""
    name = info.field_name or "input"
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise PydanticCustomError(
                    "string_type",
                    "{param} must be a string, got {got}",
                    {"param": f"{name}[{i}]", "got": _json_type(item)},
                )
    elif not isinstance(value, str) and info.field_name in ("input", "inputs"):
        raise PydanticCustomError(
            "input_type",
            "{param} must be a string or a list of strings, got {got}",
            {"param": name, "got": _json_type(value)},
        )
    return value


TextInput = Annotated[str | list[str], BeforeValidator(_strings)]
TextList = Annotated[list[str], BeforeValidator(_strings)]


def _fail(param: str, message: str, got: Any, hint: str = "") -> PydanticCustomError:
    return PydanticCustomError(
        "input_type", "{param} " + message + ", got {got}" + hint, {"param": param, "got": _json_type(got)}
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _embedding_input(value: Any, info: ValidationInfo) -> Any:
    """Texts, or token ids as OpenAI's SDK may send them; Jina's ``{"text"}`` objects become strings.

    One rule per request: every item is of the kind of the first, and the first offender is
    named exactly (``input[3]``, ``input[1][2]``)."""
    name = info.field_name or "input"
    if isinstance(value, str) or (isinstance(value, list) and not value):
        return value
    if not isinstance(value, list):
        hint = " (token ids: a list of integers, or a list of lists of integers)"
        raise _fail(name, "must be a string or a list of strings", value, hint)
    first = value[0]
    if isinstance(first, (str, dict)):
        texts = []
        for i, item in enumerate(value):
            if isinstance(item, dict) and set(item) == {"text"}:
                item = item["text"]  # Jina's {"text": ...} input objects
            if not isinstance(item, str):
                raise _fail(f"{name}[{i}]", "must be a string", item)
            texts.append(item)
        return texts
    if _is_id(first):
        for i, item in enumerate(value):
            if not _is_id(item):
                raise _fail(f"{name}[{i}]", f"must be a token id (an integer) like {name}[0]", item)
        return value
    if isinstance(first, list):
        for i, row in enumerate(value):
            if not isinstance(row, list):
                raise _fail(f"{name}[{i}]", f"must be a list of token ids like {name}[0]", row)
            for j, item in enumerate(row):
                if not _is_id(item):
                    raise _fail(f"{name}[{i}][{j}]", "must be a token id (an integer)", item)
        return value
    raise _fail(f"{name}[0]", "must be a string or a token id", first)


EmbeddingInput = Annotated[str | list[str] | list[int] | list[list[int]], BeforeValidator(_embedding_input)]


def is_token_ids(value: str | list[str] | list[int] | list[list[int]]) -> bool:
    """Whether a validated :data:`EmbeddingInput` holds token ids."""
    return isinstance(value, list) and bool(value) and not isinstance(value[0], str)


LONG_INPUTS = (
    "inputs longer than the model reads: truncate (cut), error (422) or chunk (windows, pooled); "
    "default: the model's long_inputs (docs/long-inputs.md)"
)

JinaTask = Literal[
    "retrieval.query",
    "retrieval.passage",
    "text-matching",
    "classification",
    "separation",
    "clustering",
    "code.query",
    "code.passage",
]


class Request(BaseModel):
    """A request body: unknown fields are an error, and only the first is reported (pydantic would
    make one error per unknown field, however many a client sends)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _first_unknown_field(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        known = cls.model_fields
        first = next((key for key in data if key not in known), None)
        if first is None:
            return data
        return {key: value for key, value in data.items() if key in known} | {first: data[first]}


class EmbeddingOptions(Request):
    normalize_embeddings: bool | None = Field(default=None, description="unit vectors (default: the model's normalize)")
    prompt: str | None = Field(default=None, description="text put before every input")
    prompt_name: str | None = Field(default=None, description="a prompt of the model: its own or the catalogue's")
    precision: Precision = Field(default="float32", description="float32, int8, uint8, binary or ubinary")
    return_chunks: bool = Field(
        default=False, description="long_inputs chunk: also each window's embedding and its span in the input"
    )


class EmbeddingRequest(Request):
    """OpenAI's embeddings request, plus embedserve's ``options`` and ``truncate`` and Jina's extras."""

    input: EmbeddingInput = Field(
        description="a string, a list of strings, or token ids of the model's own vocabulary (a list of integers "
        'is one input, a list of lists several); Jina\'s {"text": ...} objects are read as strings'
    )
    model: str | None = Field(default=None, description="catalogue id; default: the default embeddings model")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="keep the first N dimensions (Matryoshka)")
    user: str | None = None
    truncate: bool | None = Field(
        default=None, description="true: long_inputs truncate; false: long_inputs error (inputs past max_length: 422)"
    )
    long_inputs: LongInputs | None = Field(default=None, description=LONG_INPUTS)
    options: EmbeddingOptions | None = None
    task: JinaTask | None = Field(default=None, description="Jina: picks the model's prompt of that purpose")
    embedding_type: Literal["float", "base64", "int8", "uint8", "binary", "ubinary"] | None = Field(
        default=None, description="Jina: base64 is encoding_format base64; the others are options.precision"
    )
    normalized: bool | None = Field(default=None, description="Jina: the same as options.normalize_embeddings")
    late_chunking: bool | None = Field(default=None, description="Jina: only false is supported")


class SparseOptions(Request):
    prompt: str | None = None
    prompt_name: str | None = None
    return_tokens: bool = Field(default=False, description="add the vocabulary string of every index")
    top_k: int | None = Field(default=None, ge=1, description="keep only the k largest weights")
    return_chunks: bool = Field(
        default=False, description="long_inputs chunk: also each window's sparse vector and its span in the input"
    )


class SparseRequest(Request):
    input: TextInput
    model: str | None = Field(default=None, description="catalogue id; default: the first sparse-embeddings model")
    user: str | None = None
    truncate: bool | None = Field(default=None, description="true: long_inputs truncate; false: long_inputs error")
    long_inputs: LongInputs | None = Field(default=None, description=LONG_INPUTS)
    options: SparseOptions | None = None


class RerankRequest(Request):
    query: str
    documents: TextList
    model: str | None = Field(default=None, description="catalogue id; default: the first rerank model")
    top_k: int | None = Field(default=None, ge=1, description="return the k best (same as top_n)")
    top_n: int | None = Field(default=None, ge=1, description="return the n best (same as top_k)")
    return_documents: bool = True
    truncate: bool | None = Field(default=None, description="true: long_inputs truncate; false: long_inputs error")
    long_inputs: LongInputs | None = Field(
        default=None, description="chunk: a document scores its best window, the query read with each"
    )
    max_chunks_per_doc: int | None = Field(
        default=None, ge=1, description="score each document's first n windows (implies long_inputs chunk)"
    )
    user: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingChunk(BaseModel):
    """One window of a chunked input (``options.return_chunks``): its embedding and its span."""

    embedding: list[float] | list[int] | str
    start: int = Field(description="the window's first character in the input")
    end: int = Field(description="one past its last character")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str
    chunks: list[EmbeddingChunk] | None = Field(default=None, description="options.return_chunks only")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class SparseChunk(BaseModel):
    """One window of a chunked input (``options.return_chunks``): its sparse vector and its span."""

    indices: list[int]
    values: list[float]
    start: int
    end: int


class SparseEmbedding(BaseModel):
    object: Literal["sparse_embedding"] = "sparse_embedding"
    index: int
    indices: list[int]
    values: list[float]
    tokens: list[str] | None = None
    chunks: list[SparseChunk] | None = Field(default=None, description="options.return_chunks only")


class SparseResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SparseEmbedding]
    model: str
    usage: Usage


class RerankDocument(BaseModel):
    text: str


class RerankItem(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    results: list[RerankItem]
    usage: Usage


class BatchingInfo(BaseModel):
    """The model's dynamic batching limits (models.yaml ``batching:``)."""

    max_batch_size: int | None  # None until the model is loaded (then its engine's default)
    max_batch_tokens: int | None  # None until the model is loaded (then its engine's default)
    max_wait_ms: float
    max_queue: int
    passes: int | None  # forward passes side by side; None until the model is loaded (set by its engine)


class BatchStats(BaseModel):
    """Live counters of the model's batcher since it was loaded."""

    queue_depth: int
    batches: int
    inputs_computed: int


class PromptInfo(BaseModel):
    """One prompt of the model: its text and where it is set (the model's own configuration or the catalogue)."""

    text: str
    origin: Literal["model", "catalogue"]


Origin = Literal["model", "catalogue"]


class ModelInfo(BaseModel):
    id: str
    name: str
    type: str
    family: str | None  # kind/architecture (docs/families.md); None while the model's files are not local
    serves: list[str] = Field(description="the types it serves: its own, or several for a bge-m3 model")
    engine: str
    backend: Literal["torch", "onnx", "openvino"]
    quantize: Literal["none", "int8"]
    dtype: Literal["float32", "float16", "bfloat16"]
    source: str
    loaded: bool
    state: ModelState
    error: str | None
    device: str
    dimension: int | None = Field(description="output dimensions a request gets by default")
    max_dimension: int | None = Field(description="the model's full output width: the most a request may ask for")
    dimensions_origin: Origin | None = Field(description="who sets the default dimensions, when fewer than all")
    max_length: int | None
    max_length_origin: Origin | None
    similarity: str | None = Field(description="the model's similarity_fn_name (cosine, dot, euclidean, manhattan)")
    prompts: list[str] = Field(description="names of the prompts, the model's own and the catalogue's merged")
    prompt_texts: dict[str, PromptInfo]
    default_prompt: str | None
    default_prompt_origin: Origin | None
    settings_read: bool = Field(description="whether the model's own settings were read (they are once it loaded)")
    preload: bool
    trust_remote_code: bool
    description: str | None
    default: bool  # the catalogue's default: true (the model a request of this type gets when it names none)
    load_seconds: float | None
    batching: BatchingInfo
    stats: BatchStats


class OpenAIModel(ModelInfo):
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    models: list[ModelInfo]
    total: int
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class Health(BaseModel):
    status: Literal["healthy", "degraded"]
    total_models: int
    loaded_models: int
    startup_complete: bool
    failed_models: list[str]


class ModelReadiness(BaseModel):
    state: ModelState
    error: str | None
    preload: bool


class Readiness(BaseModel):
    status: Literal["ready", "loading", "degraded", "not_ready"]
    ready: bool
    models: dict[str, ModelReadiness]

"""Server settings: CLI flags over ``EMBEDSERVE_*`` environment variables over defaults.

The CLI passes its flags as keyword arguments, which pydantic-settings ranks above the
environment. A typo in a variable's value is an error that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedserve.priority import DEFAULT_NICE

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Everything the server reads at start-up. Each field is ``EMBEDSERVE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EMBEDSERVE_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=7860, ge=0, le=65535, description="port to bind (0: any free port)")
    config: Path = Field(
        default=Path("models.yaml"),
        description="the model catalogue (models.yaml); relative paths in it are relative to its folder",
    )
    lazy: bool = Field(default=False, description="load no model at start-up; each loads on first use")
    log_level: LogLevel = Field(default="info", description="the least severe log lines written")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; empty: CORS off"
    )
    max_inputs: PositiveInt = Field(
        default=2048, description="inputs (or rerank documents) per request, unless the model sets max_inputs"
    )
    max_input_chars: PositiveInt = Field(
        default=100_000, description="characters per input text (with the prompt or rerank query before it)"
    )
    max_request_chars: PositiveInt = Field(
        default=16 * 1024 * 1024,
        description="characters a request has tokenized: its texts, each with the prompt (or the rerank query) "
        "before it; a prompt cannot multiply a request's work past what its largest body could hold",
    )
    max_chunks_per_input: PositiveInt = Field(
        default=256, description="windows one input may be split into (long_inputs: chunk); past it 413"
    )
    max_chunks_per_request: PositiveInt = Field(
        default=4096, description="windows of all the inputs of a request together (long_inputs: chunk); past it 413"
    )
    torch_threads: PositiveInt | None = Field(
        default=None,
        description="torch intra-op threads, shared by the torch passes running at once (batching.passes); "
        "default: torch's own (the physical cores)",
    )
    compute_nice: int = Field(
        default=DEFAULT_NICE,
        ge=0,
        le=19,
        description="how much lower than the event loop the threads that load models and run forward passes are "
        "scheduled (a nice increment, Linux): a busy server still answers /health and 429s at once; 0: the same",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="where onnx/openvino exports are kept; default: $XDG_CACHE_HOME/embedserve or ~/.cache/embedserve",
    )
    tokenizer_threads: PositiveInt = Field(
        default=1, description="threads that tokenize requests, shared by all models (Rust tokenizers)"
    )
    tokenizer_queue_chars: PositiveInt = Field(
        default=64 * 1024 * 1024,
        description="characters of requests admitted to the tokenizer and not yet tokenized; past it 429",
    )
    # The embedding cache (docs/cache.md)
    cache_bytes: NonNegativeInt = Field(
        default=256 * 1024 * 1024,
        description="bytes of raw embeddings the in-process cache holds (least recently used out first); "
        "0: no in-process cache",
    )
    cache_url: str | None = Field(
        default=None,
        repr=False,  # may hold a password
        description="a Redis shared by several servers (redis://host:6379/0, rediss:// for TLS); empty: none",
    )
    cache_ttl: NonNegativeInt = Field(
        default=7 * 24 * 3600, description="seconds an embedding stays in Redis; 0: until Redis evicts it"
    )
    cache_timeout: PositiveFloat = Field(
        default=0.1,
        description="seconds a Redis read or write may take; a slower or absent Redis is a miss (never an error)",
    )
    playground: bool = Field(default=True, description="serve the browser playground at /playground; false: a 404")
    # Production: keys, limits, deadlines, logs (docs/production.md)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, repr=False, description="comma-separated API keys; empty (and no keys file): no auth"
    )
    api_keys_file: Path | None = Field(default=None, description="a file of API keys, one a line (# comments)")
    public_probes: bool = Field(default=True, description="/health, /ready and /metrics answer without a key")
    max_documents: PositiveInt = Field(
        default=1000, description="documents per rerank request (and at most max_inputs)"
    )
    max_body_bytes: PositiveInt = Field(
        default=16 * 1024 * 1024, description="bytes of a request body; a larger body is refused before it is read"
    )
    max_json_depth: PositiveInt = Field(default=32, description="nesting of arrays and objects in a request body")
    request_timeout: NonNegativeFloat = Field(
        default=60.0, description="seconds a request may wait for its model; 0: no deadline"
    )
    shutdown_grace: NonNegativeInt = Field(
        default=30, description="seconds in-flight requests get to finish after SIGTERM"
    )
    log_format: LogFormat = Field(default="text", description="text, or json: one JSON object a line")
    # Connections (docs/hardening.md): `embedserve serve` only; under Ray Serve its proxy has its own
    idle_timeout: PositiveInt = Field(
        default=5, description="seconds a keep-alive connection may wait for its next request before it is closed"
    )
    header_timeout: PositiveFloat = Field(
        default=10.0,
        description="seconds from a connection's opening (or a request's first byte) to its complete headers; "
        "else 408 and the connection is closed",
    )
    min_body_rate: NonNegativeInt = Field(
        default=1024,
        description="bytes a second a request body must average once header_timeout seconds have passed; "
        "else 408 (0: no minimum)",
    )
    max_header_bytes: PositiveInt = Field(
        default=64 * 1024, description="request line and headers together, in bytes; past it 431"
    )
    max_connections: PositiveInt = Field(
        default=1000,
        description="open connections; one more closes the connection idle the longest (capped below the "
        "process's limit on open files)",
    )

    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="without API keys: comma-separated Host names clients may use (* for any); on a loopback "
        "address localhost, 127.0.0.1 and [::1] are allowed too, on another address with none given any is",
    )

    @field_validator("cors_origins", "api_keys", "allowed_hosts", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _read_keys_file(self) -> Settings:
        """Add the keys of ``api_keys_file`` to ``api_keys``; a missing or empty file is an error."""
        if self.api_keys_file is None:
            return self
        try:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the API keys file {self.api_keys_file}: {type(exc).__name__}") from None
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ValueError(f"the API keys file {self.api_keys_file} holds no key")
        self.api_keys = list(dict.fromkeys([*self.api_keys, *keys]))
        return self

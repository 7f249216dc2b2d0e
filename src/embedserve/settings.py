"""Server settings: CLI flags over ``EMBEDSERVE_*`` environment variables over defaults.

The CLI passes its flags as keyword arguments, which pydantic-settings ranks above the
environment. A typo in a variable's value is an error that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PositiveInt, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Everything the server reads at start-up. Each field is ``EMBEDSERVE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EMBEDSERVE_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=7860, ge=0, le=65535, description="port to bind (0: any free port)")
    config: Path = Field(default=Path("models.yaml"), description="the model catalogue")
    lazy: bool = Field(default=False, description="load no model at start-up; each loads on first use")
    log_level: LogLevel = "info"
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS; empty: CORS off"
    )
    max_inputs: PositiveInt = Field(default=2048, description="inputs (or rerank documents) per request")
    max_input_chars: PositiveInt = Field(default=100_000, description="characters per input text")
    torch_threads: PositiveInt | None = Field(
        default=None, description="torch intra-op threads; default: torch's own (the physical cores)"
    )
    cache_dir: Path | None = Field(
        default=None,
        description="where onnx/openvino exports are kept; default: $XDG_CACHE_HOME/embedserve or ~/.cache/embedserve",
    )
    tokenizer_threads: PositiveInt = Field(
        default=1, description="threads that tokenize requests, shared by all models (Rust tokenizers)"
    )
    playground: bool = Field(default=True, description="serve the browser playground at /playground; false: a 404")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

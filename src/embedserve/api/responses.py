"""JSON responses that serialize numpy arrays directly (no Python float per element)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from starlette.responses import JSONResponse


class FastJSONResponse(JSONResponse):
    """orjson with numpy support; handlers build one from plain dicts holding arrays."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def usage(tokens: int) -> dict[str, int]:
    """OpenAI's ``usage`` (Jina's too)."""
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def base64_rows(rows: Any) -> list[str]:
    """Each row's little-endian bytes in base64, as OpenAI, Cohere and Jina encode embeddings."""
    little = rows.astype(rows.dtype.newbyteorder("<"), copy=False)
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]

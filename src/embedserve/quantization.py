"""Embedding post-processing: Matryoshka truncation, normalization and precision.

Precision follows sentence-transformers' ``quantize_embeddings``: ``int8``/``uint8`` bucket each
dimension's range into 256 steps, ``binary``/``ubinary`` pack the sign bits (8 dimensions a byte,
``binary`` offset by -128). The range comes from the embeddings themselves in sentence-transformers;
for unit vectors embedserve fixes it to [-1, 1] instead, so a text's quantized vector does not
depend on what else was in its request.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import numpy.typing as npt

from embedserve.errors import InvalidInput

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")


def normalize(embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scale each row to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return (embeddings / np.where(norms == 0, 1, norms)).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def unit_ranges(dimension: int) -> npt.NDArray[np.float32]:
    """The (2, dimension) range of every component of a unit vector (one read-only array per width)."""
    ranges = np.stack([np.full(dimension, -1.0), np.full(dimension, 1.0)]).astype(np.float32)
    ranges.flags.writeable = False
    return ranges


def quantize(
    embeddings: npt.NDArray[np.float32], precision: Precision, ranges: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.generic]:
    """Convert float32 embeddings to ``precision``; ``ranges`` is (2, dim) of min and max for int8/uint8."""
    if precision == "float32":
        return embeddings.astype(np.float32, copy=False)
    if precision in ("int8", "uint8"):
        if ranges is None:
            if len(embeddings) < 2:
                raise InvalidInput(
                    f"precision {precision} of unnormalized embeddings takes its range from the request's "
                    "embeddings and needs at least 2 inputs; send more inputs or normalize",
                    param="options.precision",
                )
            ranges = np.stack([embeddings.min(axis=0), embeddings.max(axis=0)])
        starts = ranges[0].astype(np.float32)
        steps = (ranges[1].astype(np.float32) - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets: npt.NDArray[np.float32] = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        if precision == "uint8":
            return buckets.astype(np.uint8)
        return (buckets - 128).astype(np.int8)
    packed: npt.NDArray[np.uint8] = np.packbits(embeddings > 0, axis=-1)
    if precision == "ubinary":
        return packed
    return (packed.astype(np.int16) - 128).astype(np.int8)

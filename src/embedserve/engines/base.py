"""The engine contract: what the registry and batching layers may ask of a loaded model.

An engine is built (and its weights loaded) by its constructor, which blocks and runs in a
worker thread. After that, every method is called from one worker thread at a time per model,
so an engine needs no locking of its own. Inputs arrive already checked (non-empty strings,
within limits) and with any prompt already chosen; engines return numpy arrays and never
raise for a well-formed input. ``close`` frees the weights.

Token counts include the model's special tokens and are not truncated: the caller compares
them with ``max_length`` to report usage and to refuse over-long inputs when asked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SparseVector:
    """Indices (ascending, unique) into the vocabulary and their positive weights."""

    indices: IntArray
    values: FloatArray


class Engine(ABC):
    """Common to all engines: the token limit, token counting and release."""

    max_length: int
    dimension: int | None = None
    device: str = "cpu"

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the weights; the engine is not used again."""


class DenseEngine(Engine):
    @abstractmethod
    def embed(self, texts: Sequence[str], prompt: str | None) -> FloatArray:
        """(len(texts), dimension) float32, as the model outputs them (no extra normalization)."""


class SparseEngine(Engine):
    @abstractmethod
    def embed_sparse(self, texts: Sequence[str], prompt: str | None) -> list[SparseVector]:
        """One sparse vector per text."""

    @abstractmethod
    def tokens(self, indices: IntArray) -> list[str]:
        """Vocabulary strings of the given indices."""


class RerankEngine(Engine):
    @abstractmethod
    def count_pair_tokens(self, query: str, documents: Sequence[str]) -> tuple[int, list[int]]:
        """Tokens before truncation: (the query's when it is encoded on its own, else 0; each
        document's unit of work, the query included where the model reads them together)."""

    @abstractmethod
    def score(self, query: str, documents: Sequence[str]) -> FloatArray:
        """Relevance of each document to the query; higher is more relevant."""

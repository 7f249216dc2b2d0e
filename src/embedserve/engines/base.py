"""The engine contract: what the registry and batching layers may ask of a loaded model.

An engine is built (and its weights loaded) by its constructor, which blocks and runs in a
worker thread. After that, every method is called from one worker thread at a time per model,
so an engine needs no locking of its own. Inputs arrive already checked (non-empty strings,
within limits) and with any prompt already chosen; engines return numpy arrays and never
raise for a well-formed input. ``close`` frees the weights.

Token counts include the model's special tokens and are not truncated: the caller compares
them with ``max_length`` to report usage and to refuse over-long inputs when asked.

The tokenizer methods (``tokenize``, ``decode``, ``clip``, ``vocab_size``) serve TEI's
``/tokenize`` and ``/decode``, OpenAI's token-id input, truncation from the left and per-input
token caps. They are optional: an engine without a tokenizer raises ``NotImplementedError``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SparseVector:
    """Indices (ascending, unique) into the vocabulary and their positive weights."""

    indices: IntArray
    values: FloatArray


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, its text, whether it is a special token, and (for the
    others) the character offsets of its span in the input."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


Side = Literal["left", "right"]


class Engine(ABC):
    """Common to all engines: the token limit, token counting and release."""

    max_length: int
    dimension: int | None = None
    device: str = "cpu"

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation."""

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1``."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[Token]]:
        """The tokens of each text, untruncated."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        """The text of each id sequence (ids already checked against ``vocab_size``)."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

    def clip(self, texts: Sequence[str], drop: Sequence[int], side: Side) -> list[str]:
        """Each text with at least ``drop[i]`` tokens cut from ``side``, cut at a token (on the
        left, a word) boundary so that the rest tokenizes as it did; ``drop[i] == 0`` keeps it."""
        raise NotImplementedError(f"{type(self).__name__} has no tokenizer")

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

    def score_raw(self, query: str, documents: Sequence[str]) -> FloatArray:
        """Scores before the model's activation (a cross-encoder's logits); the same as
        ``score`` for engines that apply none."""
        return self.score(query, documents)

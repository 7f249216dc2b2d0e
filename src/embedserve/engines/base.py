"""The engine contract: what the registry and batching layers may ask of a loaded model.

A model's work goes through three stages, each on its own thread:

1. ``encode_texts`` / ``encode_pairs`` (the request's tokenizer thread): texts become
   :class:`Tokens` units, tokenized once, with their untruncated count. Safe to call from
   several threads at once.
2. ``forward`` (the model's batch threads: one call at a time unless ``passes`` > 1, then up
   to that many from different threads): a batch of units, possibly
   from many requests, becomes one output per unit, in order.
3. post-processing (the request, in numpy): normalization, quantization, rerank scores.

The constructor loads the weights (it blocks; it runs in a worker thread). Inputs arrive
checked (non-empty strings within limits, prompt already chosen); engines never raise for a
well-formed input. ``close`` frees the weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from embedserve.engines.tokenization import Side, TextTokenizer, Token, Tokens, Windows
from embedserve.errors import InvalidInput
from embedserve.model_settings import ModelConfig

if TYPE_CHECKING:
    from embedserve.settings import Settings

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

__all__ = [
    "DenseEngine",
    "Engine",
    "EngineOptions",
    "RerankEngine",
    "RerankUnits",
    "Side",
    "SparseEngine",
    "SparseVector",
    "Token",
    "Tokens",
    "Windows",
]


@dataclass(frozen=True)
class EngineOptions:
    """The server settings an engine reads, handed to it when it is made (never through the
    environment or at import), so ``create_app(Settings(...))`` gets what it asks for."""

    cache_dir: Path | None = None  # onnx/openvino exports; None: export.cache_root()'s default
    torch_threads: int | None = None  # torch's intra-op threads, shared by its passes; None: torch's own

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        return cls(cache_dir=settings.cache_dir, torch_threads=settings.torch_threads)


@dataclass(frozen=True)
class SparseVector:
    """Indices (ascending, unique) into the vocabulary and their positive weights."""

    indices: IntArray
    values: FloatArray


class Engine(ABC):
    """Common to all engines: the tokenizer, the token limit, the forward pass and release."""

    tokenizer: TextTokenizer
    max_length: int
    dimension: int | None = None  # the full output width (a default ``dimensions`` may serve fewer)
    own_settings: ModelConfig | None = None  # the model's own configuration, as its library read it
    device: str = "cpu"
    passes: int = 1  # forward passes it can run side by side: the default of ``batching.passes``
    shares_device: bool = False  # its passes take one unit of the device's gate, not all of it (gate.py)
    # What the batcher asks of the engine (TEI's backend trait: ``is_padded``, ``max_batch_size``).
    # ``is_padded``: a pass pads every unit to the longest, so the queue counts a batch's tokens
    # as the longest unit times the batch's size; else as the sum of its units' tokens.
    is_padded: bool = True
    max_batch_size: int = 32  # inputs per pass where the catalogue sets none
    max_batch_tokens: int = 16384  # tokens per pass (counted as above) where the catalogue sets none

    def pass_threads(self, passes: int) -> None:  # noqa: B027 (a hook; most engines need nothing)
        """Called on a batch thread before each pass, with the passes now running on the device
        (this one included), so the pass can take its share of the threads. Default: nothing."""

    @abstractmethod
    def forward(self, batch: Sequence[Tokens]) -> Any:
        """One output per unit, in the batch's order (an array's rows, or a list)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the weights; the engine is not used again."""


class TextEngine(Engine):
    """Dense and sparse engines: one unit per text, the prompt read in front of it."""

    def encode_texts(
        self,
        texts: Sequence[str],
        prompt: str | None,
        side: Side = "right",
        limit: int | None = None,
        task: str | None = None,
    ) -> list[Tokens]:
        """Units cut to ``limit`` tokens (at most the model's ``max_length``) from ``side``.
        ``task``: the prompt name the request asked for (``query``, ``document``, ...); engines
        with one pipeline per side (:attr:`tasks`) pick the side by it, the others ignore it."""
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        return self.tokenizer.encode(inputs, side, group=self.prompt_group(prompt), limit=limit)

    def window_texts(
        self,
        texts: Sequence[str],
        prompt: str | None,
        overlap: int,
        limit: int | None = None,
        task: str | None = None,
    ) -> list[Windows]:
        """Each text in windows of ``limit`` tokens (``long_inputs: chunk``), the prompt in every
        window, as :meth:`encode_texts` would read each window on its own."""
        return self.tokenizer.windows(texts, prompt, overlap, group=self.prompt_group(prompt), limit=limit)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Sides with a pipeline of their own (a Router's routes) that a request may name as its
        prompt name without the model defining a prompt of that name; most engines have none."""
        return ()

    def prompt_group(self, prompt: str | None) -> int:
        """Units whose pooling depends on the prompt (it is left out) batch only with their own."""
        return 0


class DenseEngine(TextEngine):
    @abstractmethod
    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        """(len(batch), dimension) float32, as the model outputs them (no extra normalization)."""


class SparseEngine(TextEngine):
    @abstractmethod
    def forward(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        """One sparse vector per unit."""

    def tokens(self, indices: IntArray) -> list[str]:
        """Vocabulary strings of the given indices."""
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in indices])


@dataclass(frozen=True)
class RerankUnits:
    """The units a rerank request needs: ``query_units`` query-only units, then one per document."""

    units: list[Tokens]
    query_units: int


class RerankEngine(Engine):
    @abstractmethod
    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        """The units to compute for this query and its documents (each cut to ``doc_limit`` tokens)."""

    def window_pairs(
        self, query: str, documents: Sequence[str], overlap: int, doc_limit: int | None = None
    ) -> tuple[list[Tokens], list[Windows]]:
        """For a chunked rerank: the query-only units (see :meth:`encode_pairs`), then each
        document's windows, each scored as a document of its own by :meth:`scores`."""
        raise InvalidInput(
            f"this reranker ({type(self).__name__}) cannot read a document in windows; send long_inputs truncate",
            param="long_inputs",
        )

    @abstractmethod
    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        """One row (or one raw score) per unit."""

    def embedding_prompts(self) -> tuple[str | None, str | None] | None:
        """For a reranker that embeds the query and each document on its own (a bi-encoder, which
        must then be a :class:`TextEngine` whose outputs ``scores`` reads, the query's first): the
        prompts of the two sides, so ``tasks`` can take the embeddings from the cache. None (the
        default) for one that reads them together (a cross-encoder)."""
        return None

    @abstractmethod
    def scores(self, outputs: Any, query_units: int, raw: bool = False) -> FloatArray:
        """Relevance of each document, from the forward outputs of one request's units (the list
        the batcher returned, one per unit, in order); ``raw``:
        before the model's activation (a cross-encoder's logits), where it has one."""

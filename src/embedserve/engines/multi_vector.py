"""Multi-vector models (late interaction, ColBERT) and models that serve several types (BGE-M3).

A multi-vector engine turns each text into one vector per token (:class:`TokenVectors`), with
the ids of the tokens they stand for. Queries and documents are encoded differently (markers,
query expansion, a skiplist on documents), so units are made per side (:meth:`encode_inputs`).
Query and document are compared by MaxSim (:func:`maxsim`): each query vector takes its best
dot product over the document's vectors, and those maxima are summed (``maxsim``) or averaged
(``meanmaxsim``).

No torch here: the API and ``tasks`` import this module; the engines live in ``colbert.py`` and
``bge_m3.py``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from embedserve.engines.base import Engine, FloatArray, IntArray, Side, SparseVector, Tokens

InputKind = Literal["query", "document"]
Similarity = Literal["maxsim", "meanmaxsim"]
QUERY_GROUP = 1  # Tokens.group of query units: queries and documents never share a forward pass
DOCUMENT_GROUP = 2


@dataclass(frozen=True)
class TokenVectors:
    """One text's vectors, one row per scored token, and the id of each token (the expansion
    token, e.g. ``[MASK]``, at a query's expansion positions)."""

    vectors: FloatArray  # (tokens, dimension) float32
    ids: IntArray  # (tokens,)


@dataclass(frozen=True)
class Alignment:
    """MaxSim of one query and one document: for each query vector, the document vector it
    matched best and that dot product; ``score`` is their sum or mean."""

    matches: IntArray  # (query tokens,) row of the document's vectors
    similarities: FloatArray  # (query tokens,)
    score: float


def maxsim(query: FloatArray, document: FloatArray, similarity: Similarity = "maxsim") -> Alignment:
    """MaxSim of a query's and a document's vectors (rows): per query row, the best dot product."""
    if len(query) == 0 or len(document) == 0:
        empty = np.zeros(len(query), dtype=np.float32)
        return Alignment(np.zeros(len(query), dtype=np.int64), empty, 0.0)
    products = np.asarray(query, dtype=np.float32) @ np.asarray(document, dtype=np.float32).T
    matches = products.argmax(axis=1)
    best = products[np.arange(len(query)), matches].astype(np.float32)
    total = float(best.sum(dtype=np.float64))
    return Alignment(matches.astype(np.int64), best, total / len(query) if similarity == "meanmaxsim" else total)


class MultiVectorEngine(Engine):
    """Token vectors per text; queries and documents encoded each as the model's library does."""

    similarity: Similarity = "maxsim"

    @abstractmethod
    def encode_inputs(
        self, texts: Sequence[str], kind: InputKind, side: Side = "right", limit: int | None = None
    ) -> list[Tokens]:
        """Units for ``texts`` as queries or documents (markers, expansion and length of that side)."""

    @abstractmethod
    def forward(self, batch: Sequence[Tokens]) -> list[TokenVectors]:
        """One :class:`TokenVectors` per unit."""

    def side_limit(self, kind: InputKind) -> int:
        """Tokens a text of this side is read up to (default: the model's ``max_length``)."""
        return self.max_length

    def token_texts(self, ids: IntArray) -> list[str]:
        """The vocabulary string of each token id."""
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


@dataclass(frozen=True)
class M3Output:
    """All of a BGE-M3 forward pass for one text: its dense vector, its lexical (sparse) weights
    and its ColBERT vectors."""

    dense: FloatArray
    sparse: SparseVector
    colbert: TokenVectors


class MultiTaskEngine(Engine):
    """One loaded model serving several types: one forward pass gives every type's output
    (:class:`M3Output`); the registry's ``TaskView`` narrows them per request type."""

    @abstractmethod
    def view(self, task: str) -> Engine:
        """The engine ``tasks`` see for ``task``: a dense, sparse or multi-vector engine whose
        tokenization is this model's (its ``forward`` is never called: units go to this model's batcher)."""

    @abstractmethod
    def pick(self, task: str, outputs: Sequence[Any]) -> list[Any]:
        """``task``'s part of each forward output."""

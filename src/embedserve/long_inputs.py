"""Inputs longer than a model reads: cut (``truncate``), refused (``error``) or split into
windows and pooled (``chunk``); see docs/long-inputs.md.

With ``chunk`` an input's tokens are split into windows of the model's length (its special
tokens and the prompt counted; the prompt is in every window) that share ``chunk_overlap``
tokens (engines' ``window_texts``). All windows of all inputs of a request go to the model's
batcher together, and each input's window outputs are pooled into one:

- dense: the mean of the window vectors weighted by each window's tokens of the input (the
  prompt and special tokens not counted), on the model's own outputs, before ``dimensions``,
  normalization and quantization;
- sparse (SPLADE): the element-wise max, as SPLADE pools its tokens;
- rerank: a document scores its best window (the query read with every window).

A request says which with ``long_inputs`` (or ``truncate``: true is ``truncate``, false is
``error``); the model's catalogue entry says which when the request does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from embedserve.catalog import LongInputs
from embedserve.engines.base import SparseVector, Tokens, Windows
from embedserve.errors import InvalidInput, LimitExceeded

__all__ = ["Chunked", "LongInputs", "choose", "pool_dense", "pool_sparse"]
T = TypeVar("T")


def choose(
    long_inputs: LongInputs | None,
    truncate: bool | None,
    *,
    long_param: str = "long_inputs",
    truncate_param: str = "truncate",
) -> LongInputs | None:
    """A request's ``long_inputs`` and ``truncate`` as one mode (``truncate`` true is
    ``truncate``, false is ``error``); None when it gives neither (the model's default applies).
    Both given and disagreeing: a 422 naming both."""
    implied: LongInputs | None = None if truncate is None else ("truncate" if truncate else "error")
    if long_inputs is None:
        return implied
    if implied is not None and implied != long_inputs:
        raise InvalidInput(
            f"{truncate_param} {str(truncate).lower()} and {long_param} {long_inputs} disagree: {truncate_param} "
            f"true is {long_param} truncate, false is error; give one of them",
            param=long_param,
        )
    return long_inputs


def mode(long_inputs: LongInputs | None, truncate: bool, default: LongInputs) -> LongInputs:
    """What a task does with long inputs: ``long_inputs`` if set, else ``error`` when
    ``truncate`` is false, else the model's catalogue default."""
    if long_inputs is not None:
        return long_inputs
    return default if truncate else "error"


@dataclass(frozen=True)
class Chunked:
    """The windows of a request's inputs, one :class:`Windows` per input, in order."""

    windows: list[Windows]

    @property
    def units(self) -> list[Tokens]:
        """Every window's unit, input after input: what goes to the batcher."""
        return [unit for w in self.windows for unit in w.units]

    @property
    def tokens(self) -> int:
        """Tokens the model reads for all the windows (usage)."""
        return sum(unit.cost for w in self.windows for unit in w.units)

    @property
    def spans(self) -> list[list[tuple[int, int]]]:
        return [w.spans for w in self.windows]

    def split(self, outputs: Sequence[T]) -> list[list[T]]:
        """The batcher's outputs (one per window, in :attr:`units` order) grouped by input."""
        out, at = [], 0
        for w in self.windows:
            out.append(list(outputs[at : at + len(w.units)]))
            at += len(w.units)
        if at != len(outputs):
            raise RuntimeError(f"{len(outputs)} outputs for {at} windows. This is a bug.")
        return out

    def check(self, per_input: int, per_request: int, param: str) -> None:
        """At most ``per_input`` windows for any input and ``per_request`` in all, else a 413
        naming the input and the setting."""
        for i, w in enumerate(self.windows):
            if len(w.units) > per_input:
                where = f"{param}[{i}]"
                raise LimitExceeded(
                    f"{where} makes {len(w.units)} windows of the model's length; the limit is {per_input} per input "
                    "(EMBEDSERVE_MAX_CHUNKS_PER_INPUT): shorten it, or send long_inputs truncate",
                    param=where,
                )
        total = sum(len(w.units) for w in self.windows)
        if total > per_request:
            raise LimitExceeded(
                f"'{param}' makes {total} windows of the model's length; the limit is {per_request} per request "
                "(EMBEDSERVE_MAX_CHUNKS_PER_REQUEST): send fewer or shorter inputs",
                param=param,
            )


def first(windows: list[Windows], n: int | None) -> list[Windows]:
    """Each input's first ``n`` windows (Cohere's ``max_chunks_per_doc``: the rest is not read)."""
    if n is None:
        return windows
    return [Windows(w.units[:n], w.spans[:n], w.weights[:n]) for w in windows]


def pool_dense(outputs: npt.NDArray[np.float32], chunked: Chunked) -> npt.NDArray[np.float32]:
    """One row per input: the mean of its windows' rows weighted by their tokens of the input."""
    rows = []
    at = 0
    for w in chunked.windows:
        n = len(w.units)
        weights = np.asarray(w.weights, dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones(n)
        block = outputs[at : at + n].astype(np.float64)
        rows.append(weights @ block / weights.sum())
        at += n
    return np.asarray(rows, dtype=np.float32)


def pool_sparse(outputs: Sequence[SparseVector], chunked: Chunked) -> list[SparseVector]:
    """One sparse vector per input: the element-wise max of its windows' vectors."""
    return [max_sparse(group) for group in chunked.split(outputs)]


def max_sparse(vectors: Sequence[SparseVector]) -> SparseVector:
    """The element-wise max of sparse vectors (indices ascending and unique, weights positive)."""
    if len(vectors) == 1:
        return vectors[0]
    indices = np.concatenate([v.indices for v in vectors]).astype(np.int64)
    values = np.concatenate([v.values for v in vectors]).astype(np.float32)
    union = np.unique(indices)
    out = np.zeros(len(union), dtype=np.float32)
    np.maximum.at(out, np.searchsorted(union, indices), values)
    return SparseVector(union, out)


def best(scores: npt.NDArray[np.float32], chunked: Chunked) -> npt.NDArray[np.float32]:
    """One score per document: the best of its windows' scores (one per window, in order)."""
    return np.array([max(group) for group in chunked.split(list(scores))], dtype=np.float32)


def check_return_chunks(wanted: bool, long_inputs: LongInputs, param: str) -> None:
    """Window vectors exist only when the inputs are chunked."""
    if wanted and long_inputs != "chunk":
        raise InvalidInput(
            f"{param} returns the vector of each window of a chunked input; it needs long_inputs chunk "
            f"(this request's is {long_inputs})",
            param=param,
        )


def describe_chunks(spans: Sequence[tuple[int, int]], rows: Sequence[Any], key: str) -> list[dict[str, Any]]:
    """A chunked input's windows as a response lists them: the window's ``key`` (its vector), and
    its span [start, end) in characters of the input."""
    return [{key: row, "start": start, "end": end} for (start, end), row in zip(spans, rows, strict=True)]

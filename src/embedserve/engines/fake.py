"""``engine: fake``: deterministic, model-free engines for tests of the HTTP layer.

Only the model's ``tokenizer.json`` is read (its directory is the catalogue entry's ``name``),
so tokenization, token counts, truncation and ``/tokenize`` behave as with the real model, while
the outputs come from a hash of each unit's token ids: the same text always gets the same
vector, whatever its batch, and nothing imports torch or loads weights. The numbers mean
nothing; tests that need real ones use a real engine.

- dense: ``dimension`` (the entry's ``dimensions``, else 32) floats drawn from the hash;
- sparse: one positive weight per distinct token id of the unit;
- rerank (cross-encoder): one logit per query-document pair; scores are its sigmoid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import (
    DenseEngine,
    Engine,
    FloatArray,
    RerankEngine,
    RerankUnits,
    SparseEngine,
    SparseVector,
    Tokens,
)
from embedserve.engines.tokenization import Side, TextTokenizer, Windows

DIMENSION = 32
MAX_LENGTH = 128


class _RustTokenizer:
    """What :class:`TextTokenizer` reads of a Hugging Face tokenizer, from ``tokenizer.json`` alone."""

    padding_side = "right"

    def __init__(self, path: Path) -> None:
        self.backend_tokenizer = Tokenizer.from_file(str(path))
        self.pad_token_id = self.backend_tokenizer.token_to_id("[PAD]") or 0


def _tokenizer(entry: CatalogEntry) -> TextTokenizer:
    path = Path(entry.source.location) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"engine fake reads the model's tokenizer.json; {path} does not exist")
    return TextTokenizer(_RustTokenizer(path), entry.spec.max_length or MAX_LENGTH)


def _rng(unit: Tokens) -> np.random.Generator:
    digest = hashlib.blake2b(np.asarray(unit.ids, dtype=np.int64).tobytes(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class FakeDenseEngine(DenseEngine):
    def __init__(self, entry: CatalogEntry) -> None:
        self.tokenizer = _tokenizer(entry)
        self.max_length = self.tokenizer.max_length
        self.dimension = entry.spec.dimensions or DIMENSION

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        dimension = self.dimension or DIMENSION
        return np.stack([_rng(u).standard_normal(dimension).astype(np.float32) for u in batch])


class FakeSparseEngine(SparseEngine):
    def __init__(self, entry: CatalogEntry) -> None:
        self.tokenizer = _tokenizer(entry)
        self.max_length = self.tokenizer.max_length
        self.dimension = self.tokenizer.vocab_size

    def forward(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        out = []
        for unit in batch:
            indices = np.unique(np.asarray(unit.ids, dtype=np.int64))
            values = (_rng(unit).random(len(indices)) + 0.01).astype(np.float32)
            out.append(SparseVector(indices, values))
        return out


class FakeRerankEngine(RerankEngine):
    def __init__(self, entry: CatalogEntry) -> None:
        self.tokenizer = _tokenizer(entry)
        self.max_length = self.tokenizer.max_length

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> RerankUnits:
        return RerankUnits(self.tokenizer.encode_pairs(query, documents, side, doc_limit), query_units=0)

    def window_pairs(
        self, query: str, documents: Sequence[str], overlap: int, doc_limit: int | None = None
    ) -> tuple[list[Tokens], list[Windows]]:
        return [], self.tokenizer.pair_windows(query, documents, overlap, doc_limit)

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        return np.array([_rng(u).standard_normal() for u in batch], dtype=np.float32)

    def scores(self, outputs: FloatArray, query_units: int, raw: bool = False) -> FloatArray:
        logits = np.asarray(outputs, dtype=np.float32)
        return logits if raw else (1 / (1 + np.exp(-logits))).astype(np.float32)


def create_fake_engine(entry: CatalogEntry) -> Engine:
    """The fake engine for the entry's type."""
    kinds: dict[str, Any] = {
        "embeddings": FakeDenseEngine,
        "sparse-embeddings": FakeSparseEngine,
        "rerank": FakeRerankEngine,
    }
    engine: Engine = kinds[entry.spec.type](entry)
    return engine

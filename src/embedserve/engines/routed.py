"""Inference-free SPLADE: a sentence-transformers ``Router`` with a different pipeline per side.

Such a model (e.g. opensearch's ``inference-free`` sparse encoders) runs SPLADE (an MLM
transformer and max pooling) on one side and only looks up static per-token weights
(``SparseStaticEmbedding``) on the other. ``SparseEncoder.encode_query`` /
``encode_document`` pick the side by ``task``; plain ``encode`` takes the router's default route.
Here the side is the request's prompt name (``query``, ``document``, or any route the router
names), else the default route.

Each side tokenizes as its first module does (the static side without special tokens), and the
side travels with the units as their ``group``, so a forward pass never mixes sides and calls
the model with that side's ``task``. torch only (``families``): an export holds one pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers import SparseEncoder

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import SparseEngine, SparseVector, Tokens
from embedserve.engines.sentence_transformers import _load_kwargs, own_settings, sparse_vectors
from embedserve.engines.tokenization import Side, TextTokenizer, Windows

STATIC_SIDE = "SparseStaticEmbedding"


class RoutedSparseEngine(SparseEngine):
    """A SparseEncoder whose first module is a Router (see the module docstring)."""

    device = "cpu"

    def __init__(self, entry: CatalogEntry) -> None:
        self.model = SparseEncoder(entry.source.location, **_load_kwargs(entry)).eval()
        self.own_settings = own_settings(self.model)
        self.device = str(self.model.device)
        router: Any = self.model[0]
        self.router = router
        self.routes: list[str] = list(router.sub_modules)
        self.default_route: str = router.default_route or self.routes[0]
        self._tokenizers: dict[str, TextTokenizer] = {}
        self._inputs: dict[str, set[str]] = {}
        for route in self.routes:
            first = router.sub_modules[route][0]
            static = type(first).__name__ == STATIC_SIDE
            limit = int(entry.spec.max_length or getattr(first, "max_seq_length", None) or 512)
            self._tokenizers[route] = TextTokenizer(first.tokenizer, limit, special_tokens=not static)
            names = getattr(first.tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"]
            self._inputs[route] = {"input_ids", "attention_mask"} | (set(names) & {"token_type_ids"})
        self.tokenizer = self._tokenizers[self.default_route]
        self.max_length = self.tokenizer.max_length
        self.dimension = self.tokenizer.vocab_size
        self.max_active_dims: int | None = getattr(self.model, "max_active_dims", None)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The sides a request may name (as its prompt name)."""
        return tuple(self.routes)

    def encode_texts(
        self,
        texts: Sequence[str],
        prompt: str | None,
        side: Side = "right",
        limit: int | None = None,
        task: str | None = None,
    ) -> list[Tokens]:
        tokenizer, group = self._side(task)
        inputs = [prompt + t for t in texts] if prompt else list(texts)
        return tokenizer.encode(inputs, side, group=group, limit=limit)

    def window_texts(
        self,
        texts: Sequence[str],
        prompt: str | None,
        overlap: int,
        limit: int | None = None,
        task: str | None = None,
    ) -> list[Windows]:
        tokenizer, group = self._side(task)
        return tokenizer.windows(texts, prompt, overlap, group=group, limit=limit)

    def _side(self, task: str | None) -> tuple[TextTokenizer, int]:
        """The tokenizer of the side ``task`` names (else the default route's), and the group of its
        units: units of one side share a pass."""
        route = task if task in self._tokenizers else self.default_route
        return self._tokenizers[route], self.routes.index(route) + 1

    def forward(self, batch: Sequence[Tokens]) -> list[SparseVector]:
        route = self.routes[batch[0].group - 1]
        arrays = self._tokenizers[route].pad(batch)
        features: dict[str, Any] = {k: torch.from_numpy(v) for k, v in arrays.items() if k in self._inputs[route]}
        with torch.inference_mode():
            return sparse_vectors(self.model(features, task=route)["sentence_embedding"], self.max_active_dims)

    def close(self) -> None:
        del self.model, self.router

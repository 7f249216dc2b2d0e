"""Static embeddings: a text's vector is the mean of its tokens' vectors (no network).

Two formats, each served as its own library computes it:

* sentence-transformers ``StaticEmbedding`` (``modules.json``; ``SentenceTransformer.encode``):
  the tokens without special tokens, untruncated, averaged by the module's ``EmbeddingBag``, then
  the model's later modules (``Normalize``, ``Dense``, ...);
* model2vec (``config.json`` without a ``model_type``, ``model.safetensors`` with ``embeddings``
  and optionally a token ``mapping`` and per-token ``weights``, ``tokenizer.json``;
  ``model2vec.StaticModel.encode``): the tokens without special tokens, cut to the model's
  ``max_length`` (512 when unset), unknown tokens dropped, the (mapped, weighted) vectors
  averaged, normalized when its config says ``normalize``.

Both run through the same torch ``EmbeddingBag`` (model2vec's mapping and weights folded into
one row per token, as sentence-transformers' ``StaticEmbedding.load`` does). There is nothing to
export: ``backend: torch`` only (``families``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Normalize
from sentence_transformers.sentence_transformer.modules import StaticEmbedding

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import DenseEngine, FloatArray, Tokens
from embedserve.engines.sentence_transformers import own_settings
from embedserve.engines.tokenization import TextTokenizer
from embedserve.families import is_model2vec

MODEL2VEC_MAX_LENGTH = 512  # model2vec's default when its config sets none
# sentence-transformers' StaticEmbedding reads any length; a limit is still needed for the token
# budget and the usage count. Inputs are at most the server's max_input_chars characters anyway.
UNLIMITED = 1 << 20


class StaticDenseEngine(DenseEngine):
    """Dense embeddings of a static-embedding model (either format above)."""

    is_padded = False  # a pass concatenates its units' tokens (EmbeddingBag offsets)

    def __init__(self, entry: CatalogEntry, directory: Path) -> None:
        self.unknown_id: int | None = None
        if is_model2vec(directory):
            model, limit = self._model2vec(directory)
        else:
            model = SentenceTransformer(str(directory), device="cpu", trust_remote_code=entry.spec.trust_remote_code)
            limit = UNLIMITED
            if not isinstance(model[0], StaticEmbedding):
                raise ValueError(
                    f"model {entry.id}: its first module is {type(model[0]).__name__}, not StaticEmbedding"
                )
            self.own_settings = own_settings(model)  # its prompts, as sentence-transformers read them
        if entry.spec.max_length is not None:
            limit = entry.spec.max_length
        self.model = model.eval()
        self.max_length = limit
        self.tokenizer = TextTokenizer(model[0].tokenizer, limit, special_tokens=False)
        self.dimension = int(model.get_embedding_dimension() or 0)

    def _model2vec(self, directory: Path) -> tuple[SentenceTransformer, int]:
        from tokenizers import Tokenizer

        config: dict[str, Any] = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        module = StaticEmbedding.load(str(directory))
        weight = module.embedding.weight
        if not torch.is_floating_point(weight):  # int8 vectors with no per-token weights to fold in
            module = StaticEmbedding(module.tokenizer, embedding_weights=weight.float())
        modules: list[Any] = [module]
        if config.get("normalize"):
            modules.append(Normalize())
        raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.unknown_id = _unknown_id(raw)
        limit = config.get("max_length", MODEL2VEC_MAX_LENGTH)
        return SentenceTransformer(modules=modules, device="cpu"), int(limit or UNLIMITED)

    def forward(self, batch: Sequence[Tokens]) -> FloatArray:
        rows = [u.ids if self.unknown_id is None else [i for i in u.ids if i != self.unknown_id] for u in batch]
        lengths = [len(r) for r in rows]
        features = {
            "input_ids": torch.tensor([i for r in rows for i in r], dtype=torch.long),
            "offsets": torch.from_numpy(np.cumsum([0, *lengths[:-1]])),
        }
        with torch.inference_mode():
            out: torch.Tensor = self.model(features)["sentence_embedding"]
        return np.asarray(out.float().numpy(), dtype=np.float32)

    def close(self) -> None:
        del self.model


def _unknown_id(tokenizer: Any) -> int | None:
    """The id model2vec drops from every text: the tokenizer model's unknown token."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):
        token = model.unk_token
        return None if token is None else tokenizer.token_to_id(token)
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")
    return None if unk is None else int(unk)

"""BGE-M3: one XLM-RoBERTa forward pass, three outputs, as FlagEmbedding's ``BGEM3FlagModel`` computes them.

The model directory is the transformer (``config.json``, weights, tokenizer) with FlagEmbedding's
two heads beside it: ``colbert_linear.pt`` (hidden → ColBERT dimension) and ``sparse_linear.pt``
(hidden → 1). From the last hidden state ``h`` of a text of ``n`` tokens (FlagEmbedding,
``finetune/embedder/encoder_only/m3/modeling.py`` and ``inference/embedder/encoder_only/m3.py``):

* dense: ``h[0]`` (the CLS token), L2-normalized;
* sparse (lexical weights): ``relu(sparse_linear(h))`` per token, the largest weight per token id,
  positive weights only, without the CLS, EOS, PAD and UNK tokens;
* ColBERT: ``colbert_linear(h[1:n])``, each row L2-normalized (the CLS token is left out; the
  trailing EOS stays), scored by MaxSim divided by the query's vector count.

One loaded copy serves the embeddings, sparse-embeddings and multi-vector routes (each request
gets its part, see ``registry.TaskView``) and the native hybrid route (all three). With
``backend: onnx`` or ``openvino`` the transformer is exported (its last hidden state is the
export's output) and the two heads run on torch.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from embedserve.catalog import CatalogEntry
from embedserve.engines.base import DenseEngine, Engine, EngineOptions, SparseEngine, SparseVector
from embedserve.engines.multi_vector import (
    InputKind,
    M3Output,
    MultiTaskEngine,
    MultiVectorEngine,
    Similarity,
    TokenVectors,
)
from embedserve.engines.sentence_transformers import _load_kwargs
from embedserve.engines.tokenization import Side, TextTokenizer, Tokens

log = logging.getLogger(__name__)
HEADS = ("colbert_linear.pt", "sparse_linear.pt")


def _head(directory: Path, name: str) -> torch.nn.Linear:
    state = torch.load(directory / name, map_location="cpu", weights_only=True)
    weight = state["weight"]
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in state)
    head.load_state_dict(state)
    return head.eval()


def _token_id(tokenizer: Any, token: str) -> int:
    found: Any = tokenizer.convert_tokens_to_ids(token)
    return int(found)


class _HiddenStates(torch.nn.Module):
    """The transformer as the export sees it: features in, ``{"hidden": last_hidden_state}`` out."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"hidden": self.model(**features, return_dict=True).last_hidden_state}


class BGEM3Engine(MultiTaskEngine):
    """Dense, sparse and ColBERT outputs of BGE-M3 from one forward pass."""

    task = "bge-m3"

    def __init__(self, entry: CatalogEntry, options: EngineOptions | None = None) -> None:
        from embedserve.engines import export

        self.options = options or EngineOptions()
        spec = entry.spec
        directory = export.source_directory(entry)
        missing = [name for name in HEADS if not (directory / name).is_file()]
        if missing:
            raise ValueError(f"engine bge-m3 needs {' and '.join(missing)} beside the model ({directory})")
        kwargs = _load_kwargs(entry)
        self.device = kwargs["device"]
        hf_tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=spec.trust_remote_code)
        model = AutoModel.from_pretrained(str(directory), trust_remote_code=spec.trust_remote_code)
        model.eval().to(self.device)
        if self.device == "cpu":
            self.max_batch_tokens = 1024  # as the sentence-transformers engines (long inputs, few at a time)
        positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        if getattr(model.config, "model_type", "") in ("xlm-roberta", "roberta"):
            positions -= int(model.config.pad_token_id or 0) + 1  # positions start after the padding index
        own = int(getattr(hf_tokenizer, "model_max_length", 0) or 0)
        limit = min(own, positions) if 0 < own < 1_000_000 and positions > 0 else (positions or 512)
        if spec.max_length is not None:
            if spec.max_length > limit:
                raise ValueError(f"max_length {spec.max_length} exceeds the model's {limit} positions")
            limit = spec.max_length
        self.max_length = limit
        self.tokenizer = TextTokenizer(hf_tokenizer, limit)
        self.colbert_linear = _head(directory, HEADS[0]).to(self.device)
        self.sparse_linear = _head(directory, HEADS[1]).to(self.device)
        self.dimension = int(model.config.hidden_size)
        self.colbert_dimension = int(self.colbert_linear.out_features)
        self.vocab_size = int(self.tokenizer.vocab_size)
        special = hf_tokenizer.special_tokens_map
        unused = ("cls_token", "eos_token", "pad_token", "unk_token")  # what FlagEmbedding leaves out
        self.unused_ids = np.array(
            sorted({_token_id(hf_tokenizer, str(special[n])) for n in unused if n in special}),
            dtype=np.int64,
        )
        names: list[str] = list(getattr(hf_tokenizer, "model_input_names", None) or ["input_ids", "attention_mask"])
        if int(getattr(model.config, "type_vocab_size", 2) or 0) < 2:  # XLM-R: one token type, ids all 0
            names = [n for n in names if n != "token_type_ids"]
        self._inputs = tuple(n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names)
        self.model: Any = model
        self.runtime: Any = None
        if spec.backend != "torch":
            self._use_backend(entry, directory)
        multi = _MultiVectorView(self)
        # "hybrid": the native route that returns all three; it tokenizes as the multi-vector view does
        self._views: dict[str, Engine] = {
            "embeddings": _DenseView(self),
            "sparse-embeddings": _SparseView(self),
            "multi-vector": multi,
            "hybrid": multi,
        }

    def _use_backend(self, entry: CatalogEntry, directory: Path) -> None:
        from embedserve.engines import export
        from embedserve.engines.runtimes import load_runtime

        spec = entry.spec
        key = export.ExportKey(
            spec.name, "bge-m3", spec.backend, spec.quantize, export.source_revision(directory), self._inputs
        )
        wrapped = _HiddenStates(self.model).eval()
        path = export.ExportCache(self.options.cache_dir).get_or_build(
            key, lambda dest: export.build_export(wrapped, "hidden", key, dest), f"model {entry.id}"
        )
        # one input per run, unpadded: the hidden states of a batch differ in length (see runtimes)
        self.runtime = load_runtime(spec.backend, path, spec.threads, 1).wide
        self.is_padded, self.max_batch_size, self.max_batch_tokens = False, 8, 8192
        self.model.to("meta")
        gc.collect()

    def view(self, task: str) -> Engine:
        return self._views[task]

    def pick(self, task: str, outputs: Sequence[Any]) -> list[Any]:
        if task == "embeddings":
            return [o.dense for o in outputs]
        if task == "sparse-embeddings":
            return [o.sparse for o in outputs]
        if task == "multi-vector":
            return [o.colbert for o in outputs]
        return list(outputs)

    def encode_texts(self, texts: Sequence[str], side: Side = "right", limit: int | None = None) -> list[Tokens]:
        """BGE-M3 reads queries and documents alike: no prompt, no marker."""
        return self.tokenizer.encode(list(texts), side, limit=limit)

    def _hidden(self, batch: Sequence[Tokens]) -> list[torch.Tensor]:
        """Each unit's last hidden state, (tokens, hidden), padding dropped."""
        if self.runtime is not None:
            return [torch.from_numpy(self.runtime.run(self.tokenizer.pad([unit]))[0]) for unit in batch]
        arrays = self.tokenizer.pad(batch)
        features = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items() if k in self._inputs}
        with torch.inference_mode():
            hidden = self.model(**features, return_dict=True).last_hidden_state
        return [hidden[i, : len(unit.ids)] for i, unit in enumerate(batch)]

    def forward(self, batch: Sequence[Tokens]) -> list[M3Output]:
        out = []
        with torch.inference_mode():
            for unit, hidden in zip(batch, self._hidden(batch), strict=True):
                hidden = hidden.to(self.device).float()
                dense = torch.nn.functional.normalize(hidden[0], dim=-1)
                weights = torch.relu(self.sparse_linear(hidden)).squeeze(-1).cpu().numpy()
                colbert = torch.nn.functional.normalize(self.colbert_linear(hidden[1:]), dim=-1)
                ids = np.asarray(unit.ids, dtype=np.int64)
                out.append(
                    M3Output(
                        dense.cpu().numpy().astype(np.float32),
                        self._lexical(ids, weights),
                        TokenVectors(colbert.cpu().numpy().astype(np.float32), ids[1:]),
                    )
                )
        return out

    def _lexical(self, ids: np.ndarray[Any, Any], weights: np.ndarray[Any, Any]) -> SparseVector:
        keep = (weights > 0) & ~np.isin(ids, self.unused_ids)
        kept_ids, kept = ids[keep], weights[keep].astype(np.float32)
        indices = np.unique(kept_ids)
        values = np.zeros(len(indices), dtype=np.float32)
        np.maximum.at(values, np.searchsorted(indices, kept_ids), kept)
        return SparseVector(indices.astype(np.int64), values)

    def close(self) -> None:
        del self.model
        self.runtime = None
        gc.collect()


class _View:
    """What ``tasks`` read of an engine, taken from the BGE-M3 engine it views."""

    def __init__(self, m3: BGEM3Engine) -> None:
        self.m3 = m3
        self.tokenizer = m3.tokenizer
        self.max_length = m3.max_length
        self.device = m3.device

    def forward(self, batch: Sequence[Tokens]) -> Any:
        raise RuntimeError("a BGE-M3 view's units go to the model's own batcher. This is a bug.")


class _TextView(_View):
    """The dense and sparse views: texts (with a prompt in front, if any) read as BGE-M3 reads them."""

    def encode_texts(
        self,
        texts: Sequence[str],
        prompt: str | None,
        side: Side = "right",
        limit: int | None = None,
        task: str | None = None,
    ) -> list[Tokens]:
        return self.m3.encode_texts([prompt + t for t in texts] if prompt else texts, side, limit)


class _DenseView(_TextView, DenseEngine):
    def __init__(self, m3: BGEM3Engine) -> None:
        super().__init__(m3)
        self.dimension = m3.dimension


class _SparseView(_TextView, SparseEngine):
    def __init__(self, m3: BGEM3Engine) -> None:
        super().__init__(m3)
        self.dimension = m3.vocab_size


class _MultiVectorView(_View, MultiVectorEngine):
    similarity: Similarity = "meanmaxsim"  # FlagEmbedding's colbert_score

    def __init__(self, m3: BGEM3Engine) -> None:
        super().__init__(m3)
        self.dimension = m3.colbert_dimension

    def encode_inputs(
        self, texts: Sequence[str], kind: InputKind, side: Side = "right", limit: int | None = None
    ) -> list[Tokens]:
        return self.m3.encode_texts(texts, side, limit)

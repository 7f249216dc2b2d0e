"""Tiny random multi-vector models: a ColBERT (sentence-transformers ``MultiVectorEncoder``) and a
BGE-M3 (XLM-RoBERTa with FlagEmbedding's ``colbert_linear.pt`` and ``sparse_linear.pt`` heads).

Shapes, not meaning: random weights from small configs, the tokenizer of the packaged
all-MiniLM-L6-v2 (a WordPiece vocabulary stands in for XLM-R's SentencePiece one; BGE-M3's
formulas only read the tokenizer's special ids).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from helpers.tiny_models import copy_tokenizer

COLBERT_DIM = 16
QUERY_LENGTH = 12


def build_tiny_colbert(dest: Path, seed: int = 0, *, expansion: str | None = "fixed") -> Path:
    """A ColBERT with ``[Q]`` / ``[D]`` markers (added special tokens), query expansion with
    ``[MASK]`` to ``QUERY_LENGTH`` tokens (``expansion`` None: none), a linear projection to
    ``COLBERT_DIM``, the punctuation skiplist on documents and normalized vectors."""
    import torch
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder import MultiVectorEncoder
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    bert = dest.parent / f"{dest.name}-bert"
    bert.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(bert)
    tokenizer = AutoTokenizer.from_pretrained(bert)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[Q]", "[D]"]})
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    kwargs: dict[str, Any] = {"max_seq_length": 128, "document_length": 64}
    if expansion is not None:
        kwargs["query_expansion"] = {"strategy": expansion, "length": QUERY_LENGTH}
    else:
        kwargs["query_length"] = QUERY_LENGTH
    transformer = Transformer(str(bert), **kwargs)
    dense = Dense(
        32,
        COLBERT_DIM,
        bias=False,
        activation_function=torch.nn.Identity(),
        module_input_name="token_embeddings",
        module_output_name="token_embeddings",
    )
    model = MultiVectorEncoder(
        modules=[
            transformer,
            dense,
            MultiVectorMask(skiplist_words=list(string.punctuation)),
            Normalize(module_input_name="token_embeddings"),
        ],
        prompts={"query": "[Q] ", "document": "[D] "},
        device="cpu",
    )
    model.save(str(dest))
    return dest


def build_tiny_m3(dest: Path, seed: int = 0) -> Path:
    """A BGE-M3 laid out as FlagEmbedding loads it: an XLM-RoBERTa (random, small) with
    ``colbert_linear.pt`` (hidden → hidden, FlagEmbedding's default ``colbert_dim``) and
    ``sparse_linear.pt`` (hidden → 1) beside it."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(dest)
    config = XLMRobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=514,
        type_vocab_size=1,
        pad_token_id=0,  # the WordPiece tokenizer's [PAD]: XLM-R's positions count from it
    )
    XLMRobertaModel(config).save_pretrained(dest)
    torch.save(torch.nn.Linear(32, 32).state_dict(), dest / "colbert_linear.pt")
    torch.save(torch.nn.Linear(32, 1).state_dict(), dest / "sparse_linear.pt")
    return dest

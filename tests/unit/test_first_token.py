"""The cross-encoder's last layer computed for the first token only: same logits, or no swap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from embedserve.engines.first_token import FirstTokenLayer, first_token_last_layer

PAIRS = [
    ("what do cells need", "Cells need energy, which mitochondria make from glucose and oxygen. " * 6),
    ("a", "b"),
    ("how long is a short answer", "It depends."),
    ("query " * 30, "document " * 90),
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from helpers.tiny_models import copy_tokenizer
    from transformers import AutoTokenizer

    path: Path = tmp_path_factory.mktemp("tokenizer")
    copy_tokenizer(path)
    return AutoTokenizer.from_pretrained(str(path))


def _config(kind: str) -> Any:
    from transformers import BertConfig, ElectraConfig, RobertaConfig

    shape = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
    if kind == "roberta":
        return RobertaConfig(vocab_size=30522, max_position_embeddings=514, num_labels=1, **shape)
    if kind == "electra":
        return ElectraConfig(vocab_size=30522, embedding_size=32, num_labels=1, **shape)
    return BertConfig(vocab_size=30522, num_labels=1, **shape)


def _model(kind: str, attention: str = "sdpa") -> Any:
    from transformers import (
        BertForSequenceClassification,
        ElectraForSequenceClassification,
        RobertaForSequenceClassification,
    )

    torch.manual_seed(0)
    config = _config(kind)
    config._attn_implementation = attention
    cls = {
        "bert": BertForSequenceClassification,
        "roberta": RobertaForSequenceClassification,
        "electra": ElectraForSequenceClassification,
    }[kind]
    return cls(config).eval()


def _logits(model: Any, tokenizer: Any) -> torch.Tensor:
    features = tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**features).logits


@pytest.mark.parametrize(
    ("kind", "attention"), [("bert", "sdpa"), ("bert", "eager"), ("roberta", "sdpa"), ("electra", "sdpa")]
)
def test_the_swap_keeps_the_logits_of_a_padded_batch(tokenizer: Any, kind: str, attention: str) -> None:
    model = _model(kind, attention)
    full = _logits(model, tokenizer)
    assert first_token_last_layer(model, tokenizer)
    assert isinstance(model.base_model.encoder.layer[-1], FirstTokenLayer)
    assert not isinstance(model.base_model.encoder.layer[0], FirstTokenLayer)
    torch.testing.assert_close(_logits(model, tokenizer), full, rtol=0, atol=1e-5)
    for (query, document), expected in zip(PAIRS, full, strict=True):  # alone, unpadded
        alone = tokenizer([query], [document], return_tensors="pt")
        with torch.inference_mode():
            torch.testing.assert_close(model(**alone).logits[0], expected, rtol=0, atol=1e-5)
    assert not first_token_last_layer(model, tokenizer)  # already swapped: nothing to do


class _MeanPooler(torch.nn.Module):
    """A head that reads every token: the swap would change its output."""

    def __init__(self, pooler: torch.nn.Module) -> None:
        super().__init__()
        self.pooler = pooler

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.pooler(hidden_states.mean(dim=1, keepdim=True))  # type: ignore[no-any-return]


def test_a_head_that_reads_every_token_keeps_the_full_layer(tokenizer: Any) -> None:
    model = _model("bert")
    model.bert.pooler = _MeanPooler(model.bert.pooler)
    full = _logits(model, tokenizer)
    assert not first_token_last_layer(model, tokenizer)
    assert not isinstance(model.bert.encoder.layer[-1], FirstTokenLayer)
    torch.testing.assert_close(_logits(model, tokenizer), full, rtol=0, atol=0)


def test_a_model_built_another_way_is_left_alone(tokenizer: Any) -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
    config.num_labels = 1
    model = DistilBertForSequenceClassification(config).eval()
    layers = list(model.distilbert.transformer.layer)
    assert not first_token_last_layer(model, tokenizer)
    assert list(model.distilbert.transformer.layer) == layers

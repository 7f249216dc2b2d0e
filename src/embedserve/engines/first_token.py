"""A cross-encoder's last layer, computed for the first token only.

A sequence-classification head (BERT's pooler, RoBERTa's and ELECTRA's classification heads)
reads the last layer's output at the first token ([CLS] / <s>) and nothing else. That layer's
other rows are computed and thrown away: for a 350-token pair, the query projection, attention
rows, attention output and feed-forward of 349 rows, about a sixth of a six-layer model.

:func:`first_token_last_layer` swaps the last encoder layer for :class:`FirstTokenLayer`, which
computes keys and values for every token (the first token attends to all of them) and everything
else for the first token only, with the layer's own weights and the model's own attention
function. The swap is kept only if a probe batch (two pairs of different lengths, so padded)
gives the same logits as before; a model whose head reads more than the first token, or whose
layer is built differently, keeps its full last layer.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)
_ATTENTION = ("query", "key", "value", "attention_head_size", "scaling", "config")
PROBE = (("which layer is computed", "the last one, for the first token only"), ("a", "b c d e f g h i j k l m n o p"))


class FirstTokenLayer(torch.nn.Module):
    """A BERT-style encoder layer whose output holds the first token's row only."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: Any = None, *args: Any, **kwargs: Any) -> Any:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.bert.modeling_bert import eager_attention_forward

        layer: Any = self.layer  # a BERT-style layer (checked by _layers)
        attention = layer.attention
        heads = attention.self
        batch, length, _ = hidden_states.shape
        size = heads.attention_head_size
        first = hidden_states[:, :1]
        query = heads.query(first).view(batch, 1, -1, size).transpose(1, 2)
        key = heads.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        value = heads.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
            attention_mask = attention_mask[:, :, :1, :]  # the first query row's mask
        run = ALL_ATTENTION_FUNCTIONS.get_interface(heads.config._attn_implementation, eager_attention_forward)
        context, _ = run(heads, query, key, value, attention_mask, dropout=0.0, scaling=heads.scaling)
        out = attention.output(context.reshape(batch, 1, -1).contiguous(), first)
        return layer.feed_forward_chunk(out)


def _layers(model: Any) -> torch.nn.ModuleList | None:
    """The encoder's layers, if the model is built the BERT way (BERT, RoBERTa, XLM-R, ELECTRA)."""
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None
    last = layers[-1]
    heads = getattr(getattr(last, "attention", None), "self", None)
    if heads is None or not all(hasattr(heads, name) for name in _ATTENTION):
        return None
    if not hasattr(last.attention, "output") or not hasattr(last, "feed_forward_chunk"):
        return None
    if getattr(last, "is_decoder", False) or getattr(last, "add_cross_attention", False):
        return None
    return layers


def first_token_last_layer(model: Any, tokenizer: Any) -> bool:
    """Swap ``model``'s last layer for :class:`FirstTokenLayer` if its logits stay the same; True if swapped.

    ``model`` is a ``*ForSequenceClassification`` model, ``tokenizer`` its tokenizer."""
    layers = _layers(model)
    if layers is None or isinstance(layers[-1], FirstTokenLayer):
        return False
    weight = next(model.parameters())
    probe = tokenizer(
        [q for q, _ in PROBE], [d for _, d in PROBE], padding=True, truncation=True, return_tensors="pt"
    ).to(weight.device)
    full = layers[-1]
    try:
        with torch.inference_mode():
            before = model(**probe).logits.float()
            layers[-1] = FirstTokenLayer(full)
            after = model(**probe).logits.float()
    except Exception as exc:  # a layer built differently: keep the full one
        layers[-1] = full
        log.debug("first-token last layer not used: %s", exc)
        return False
    # the same up to rounding: matrix products of other shapes may sum in another order
    tolerance = (1e-4 if weight.dtype == torch.float32 else 1e-2) * max(1.0, float(before.abs().max()))
    if after.shape != before.shape or not torch.allclose(after, before, rtol=0.0, atol=tolerance):
        layers[-1] = full
        return False
    return True

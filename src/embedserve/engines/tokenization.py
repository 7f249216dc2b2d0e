"""Tokenize once: the model's own fast tokenizer, with its count, truncation and padding ours.

A request's texts are tokenized once, before they are queued. The untruncated count serves
usage and the over-long check; the truncated ids serve the batch's token budget and, padded,
the forward pass. Truncation keeps the model's special tokens and cuts content from the end
(``right``) or the start (``left``); pairs are cut longest-first, as transformers does.

The ids equal what ``tokenizer(texts, truncation=True, max_length=...)`` gives, so the
served vectors equal the library's own ``encode``. The two Rust tokenizers built here are
never reconfigured after construction, so any thread may use them at the same time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

Side = Literal["right", "left"]


def utf8_offsets(text: str) -> npt.NDArray[np.int64]:
    """``out[i]`` is the length in UTF-8 bytes of ``text[:i]`` (``len(text) + 1`` entries)."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    widths = 1 + (points >= 0x80).astype(np.int64) + (points >= 0x800) + (points >= 0x10000)
    out = np.zeros(len(points) + 1, dtype=np.int64)
    np.cumsum(widths, out=out[1:])
    return out


@dataclass(frozen=True)
class Token:
    """One token of a text: its id, its text, whether it is a special token, and (for the
    others) the UTF-8 byte offsets of its span in the input (TEI's ``/tokenize`` offsets). The
    field names are TEI's, so a list of tokens serializes (orjson) as TEI sends it."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


@dataclass(frozen=True, slots=True)
class Tokens:
    """One unit of model work: a text, or a query-document pair."""

    ids: list[int]  # truncated to the model's max_length, special tokens included
    type_ids: list[int]
    original: int  # tokens before truncation, special tokens included
    group: int = 0  # only units of the same group may share a forward pass

    @property
    def cost(self) -> int:
        return len(self.ids)


class TextTokenizer:
    """Counts, truncates and pads with a Hugging Face fast tokenizer's Rust backend."""

    def __init__(self, hf_tokenizer: Any, max_length: int, *, special_tokens: bool = True) -> None:
        """``hf_tokenizer``: a transformers fast tokenizer or a ``tokenizers.Tokenizer``;
        ``special_tokens``: False for models that read the text's tokens alone (static embeddings)."""
        backend = (
            hf_tokenizer if isinstance(hf_tokenizer, Tokenizer) else getattr(hf_tokenizer, "backend_tokenizer", None)
        )
        if not isinstance(backend, Tokenizer):
            raise ValueError("the model's tokenizer is not a fast (Rust) tokenizer; embedserve needs one")
        self.hf = hf_tokenizer
        self.max_length = max_length
        self.special_tokens = special_tokens
        self._raw = Tokenizer.from_str(backend.to_str())
        self._raw.no_truncation()
        self._raw.no_padding()
        self._cut = {side: self._truncating(backend, max_length, side) for side in ("right", "left")}
        pad_id = getattr(hf_tokenizer, "pad_token_id", None)
        self.pad_id = int(pad_id if pad_id is not None else 0)
        self.pad_left = getattr(hf_tokenizer, "padding_side", "right") == "left"
        self._special_single = int(self._raw.num_special_tokens_to_add(False)) if special_tokens else 0
        self._special_pair = int(self._raw.num_special_tokens_to_add(True)) if special_tokens else 0

    @staticmethod
    def _truncating(backend: Tokenizer, max_length: int, side: str) -> Tokenizer:
        tokenizer = Tokenizer.from_str(backend.to_str())
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy="longest_first", direction=side)
        return tokenizer

    def encode(
        self, texts: Sequence[str], side: Side = "right", group: int = 0, limit: int | None = None
    ) -> list[Tokens]:
        """One unit per text, cut to ``limit`` tokens (default and at most: the model's max_length)."""
        raws = self._raw.encode_batch(list(texts), add_special_tokens=False)
        budget = max(0, min(limit or self.max_length, self.max_length) - self._special_single)
        out = []
        for raw in raws:
            original = len(raw.ids) + self._special_single
            if len(raw.ids) > budget:
                raw.truncate(budget, direction=side)
            done = self._raw.post_process(raw) if self.special_tokens else raw
            out.append(Tokens(done.ids, done.type_ids, original, group))
        return out

    def encode_pairs(
        self, query: str, documents: Sequence[str], side: Side = "right", doc_limit: int | None = None
    ) -> list[Tokens]:
        """One unit per document: the query and the document read together, cut longest-first.

        ``doc_limit`` first cuts each document (on the right) to that many tokens, counted as if it
        were encoded alone with its special tokens (Cohere's ``max_tokens_per_doc``)."""
        first = self._raw.encode(query, add_special_tokens=False)
        raws = self._raw.encode_batch(list(documents), add_special_tokens=False)
        cut = self._cut[side]
        out = []
        for raw in raws:
            if doc_limit is not None and len(raw.ids) + self._special_single > doc_limit:
                raw.truncate(max(1, doc_limit - self._special_single), direction="right")
            done = cut.post_process(first, raw)
            out.append(Tokens(done.ids, done.type_ids, len(first.ids) + len(raw.ids) + self._special_pair))
        return out

    @property
    def vocab_size(self) -> int:
        return int(self._raw.get_vocab_size(with_added_tokens=True))

    def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[Token]]:
        """Each text's tokens, untruncated, with the UTF-8 byte span of each non-special token.
        Linear in the text: the byte offset of every character comes from one cumulative sum."""
        out = []
        for text, encoding in zip(
            texts, self._raw.encode_batch(list(texts), add_special_tokens=add_special_tokens), strict=True
        ):
            to_bytes = None if text.isascii() else utf8_offsets(text).tolist()
            tokens = []
            for id_, name, special, (start, stop) in zip(
                encoding.ids, encoding.tokens, encoding.special_tokens_mask, encoding.offsets, strict=True
            ):
                if special:
                    tokens.append(Token(id_, name, True, None, None))
                elif to_bytes is None:
                    tokens.append(Token(id_, text[start:stop], False, start, stop))
                else:
                    tokens.append(Token(id_, text[start:stop], False, to_bytes[start], to_bytes[stop]))
            out.append(tokens)
        return out

    def decode(self, ids: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return list(self._raw.decode_batch([list(row) for row in ids], skip_special_tokens=skip_special_tokens))

    def pad(self, batch: Sequence[Tokens]) -> dict[str, npt.NDArray[np.int64]]:
        """input_ids, attention_mask and token_type_ids, padded to the longest unit."""
        width = max(len(t.ids) for t in batch)
        ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, unit in enumerate(batch):
            n = len(unit.ids)
            cols = slice(width - n, width) if self.pad_left else slice(0, n)
            ids[row, cols] = unit.ids
            mask[row, cols] = 1
            types[row, cols] = unit.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._raw.id_to_token(int(i)) or "" for i in ids]

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

from embedserve.errors import InvalidInput

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


@dataclass(frozen=True)
class Windows:
    """One text split into windows of at most the model's length (``long_inputs: chunk``): one
    unit per window, each with the prompt (if any) and the model's special tokens, the window's
    character span in the text, and its weight (the text's tokens in it: no prompt, no special
    tokens). A text that fits is one window, the unit :meth:`TextTokenizer.encode` would give."""

    units: list[Tokens]
    spans: list[tuple[int, int]]  # [start, end) in characters of the text (prompt not counted)
    weights: list[int]


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
        self._frame = self._single_frame()
        self._pair_frame = self._pair_frame_of()

    def _single_frame(self) -> tuple[list[int], list[int], int, list[int], list[int]]:
        """What the post-processor puts around one text: the ids and type ids before it, the type id
        of its tokens, the ids and type ids after it (read off one processed token)."""
        if not self.special_tokens:
            return [], [], 0, [], []
        done = self._raw.post_process(self._raw.encode("a", add_special_tokens=False))
        at = list(done.special_tokens_mask).index(0)
        ids, types = list(done.ids), list(done.type_ids)
        return ids[:at], types[:at], types[at], ids[at + 1 :], types[at + 1 :]

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

    def _pair_frame_of(self) -> tuple[list[int], list[int], list[int], list[int], list[int], list[int], int, int]:
        """What the post-processor puts around a pair: ids and type ids before the first text,
        between the two, after the second; and the type ids of the two texts' tokens."""
        if not self.special_tokens:
            return [], [], [], [], [], [], 0, 0
        one = self._raw.encode("a", add_special_tokens=False)
        done = self._raw.post_process(one, self._raw.encode("a", add_special_tokens=False))
        a, b = [i for i, special in enumerate(done.special_tokens_mask) if not special]
        ids, types = list(done.ids), list(done.type_ids)
        return ids[:a], types[:a], ids[a + 1 : b], types[a + 1 : b], ids[b + 1 :], types[b + 1 :], types[a], types[b]

    def pair_windows(
        self, query: str, documents: Sequence[str], overlap: int, doc_limit: int | None = None
    ) -> list[Windows]:
        """Each document in windows read with the query (a cross-encoder's chunked rerank): the
        query (cut to half the model's length at most) and as much of the document as the rest
        holds, consecutive windows sharing ``overlap`` of the document's tokens (at most half a
        window). ``doc_limit`` first cuts each document as :meth:`encode_pairs` does."""
        before, before_t, mid, mid_t, after, after_t, kind_a, kind_b = self._pair_frame
        room = self.max_length - len(before) - len(mid) - len(after)
        q = self._raw.encode(query, add_special_tokens=False).ids[: max(1, room // 2)]
        budget = max(1, room - len(q))
        step = budget - min(overlap, budget // 2)
        head = before + q + mid
        head_t = before_t + [kind_a] * len(q) + mid_t
        out = []
        for raw in self._raw.encode_batch(list(documents), add_special_tokens=False):
            ids, offsets = raw.ids, raw.offsets
            if doc_limit is not None:
                ids = ids[: max(1, doc_limit - self._special_single)]
            n = len(ids)
            units, spans, weights = [], [], []
            for start in range(0, max(n, 1), step):
                stop = min(start + budget, n)
                window = ids[start:stop]
                units.append(
                    Tokens(
                        head + window + after,
                        head_t + [kind_b] * len(window) + after_t,
                        len(head) + len(window) + len(after),
                    )
                )
                spans.append((offsets[start][0], offsets[stop - 1][1]) if stop > start else (0, 0))
                weights.append(stop - start)
                if stop >= n:
                    break
            out.append(Windows(units, spans, weights))
        return out

    def windows(
        self,
        texts: Sequence[str],
        prompt: str | None,
        overlap: int,
        group: int = 0,
        limit: int | None = None,
        keep: int | None = None,
    ) -> list[Windows]:
        """Each text's tokens in windows of ``limit`` tokens (default and at most: the model's
        max_length), the prompt and the special tokens counted, consecutive windows sharing
        ``overlap`` of the text's tokens (at most half a window). The prompt is tokenized with the
        text, as :meth:`encode` does, and repeated at the start of every window. ``keep``: read
        only the text's first tokens, as many as a unit of ``keep`` tokens holds (Cohere's
        ``max_tokens_per_doc``)."""
        prompt = prompt or ""
        before, before_types, kind, after, after_types = self._frame
        length = min(limit or self.max_length, self.max_length) - self._special_single
        out = []
        for raw in self._raw.encode_batch([prompt + t for t in texts], add_special_tokens=False):
            ids, offsets = raw.ids, raw.offsets
            head = next((i for i, (start, _) in enumerate(offsets) if start >= len(prompt)), len(ids)) if prompt else 0
            budget = length - head
            if budget < 1:
                raise InvalidInput(
                    f"the prompt takes {head} of the {length + self._special_single} tokens a window holds; "
                    "no room is left for the text (long_inputs: chunk)",
                    param="long_inputs",
                )
            step = budget - min(overlap, budget // 2)
            n = len(ids) - head
            if keep is not None:
                n = min(n, max(1, keep - self._special_single))
            units, spans, weights = [], [], []
            for start in range(0, max(n, 1), step):
                stop = min(start + budget, n)
                window = ids[:head] + ids[head + start : head + stop]
                units.append(
                    Tokens(
                        before + window + after,
                        before_types + [kind] * len(window) + after_types,
                        len(before) + len(window) + len(after),
                        group,
                    )
                )
                if stop > start:
                    first, last = offsets[head + start][0], offsets[head + stop - 1][1]
                    spans.append((max(0, first - len(prompt)), max(0, last - len(prompt))))
                else:  # a text of no tokens (only spaces): one window of the prompt alone
                    spans.append((0, 0))
                weights.append(stop - start)
                if stop >= n:
                    break
            out.append(Windows(units, spans, weights))
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
        Linear in the text: the byte offset of every character comes from one cumulative sum.
        Special tokens only where the model reads them (a static model reads none)."""
        add_special_tokens = add_special_tokens and self.special_tokens
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

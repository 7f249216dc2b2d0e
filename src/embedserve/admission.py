"""Admission by estimated wait: refuse at once (429) a request that could not finish before its deadline.

Each model's batcher keeps one :class:`WaitEstimator`. It learns two rates from the work the
model really does: the model's throughput in tokens a second (exponentially weighted averages of
its forward passes' tokens and seconds, the one over the other, so a large pass counts for more
than a small one; times the passes that ran side by side) and how many characters make a token
(an exponentially weighted average over the requests tokenized). A new request is known by its characters before it is
tokenized, so its work and the work ahead of it (tokens queued and in passes, characters being
tokenized) are both counted in tokens, and the wait is ``(ahead + own) / throughput``.

The verdict (:meth:`WaitEstimator.verdict`):

- no deadline, or nothing ahead of the request: admitted (a request alone is never refused: the
  request limits bound it, and a retry would find the same empty queue);
- no throughput measured yet (cold start): admitted (the queue bound, ``max_queue``, still holds):
  a burst that arrives before the first pass has finished is no evidence of overload, and a
  refusal then could not say when to come back;
- else admitted when the estimated wait fits in ``HEADROOM`` of the time left to the deadline
  (the rest covers the estimate's error and the response), refused otherwise, with a
  ``Retry-After`` of the seconds until enough of the work ahead has drained for it to fit.

A refusal tells the client that wait plus a random part of it again (:func:`spread`: up to
``RETRY_SPREAD`` of it, at least 0 or 1 s). The clients refused in one burst would otherwise all
come back in the same second, be refused together again, and keep the burst going; spread, they
come back a few at a time, and each wave the server answers is smaller. ``Retry-After`` can only
say whole seconds, so the clients told the same second still come back together, as many as
were refused in the same moment: the refusal also carries ``Retry-After-Ms``, the same wait with
a random fraction of a second added, which OpenAI's clients read before ``Retry-After``; those
come back spread over that second.

The estimate is conservative where it is unsure: until a request has been tokenized, characters
a token is a low guess (more tokens per character than most text has), and the throughput is what
the passes delivered at the batch sizes the load gave them (a small pass does fewer tokens a
second than a full one). A text the model truncates is never counted as more than the model reads
(:meth:`WaitEstimator.tokens_for`'s ``cap``), so one huge request being tokenized does not shut
the model to everyone else.
"""

from __future__ import annotations

import math
import random
import threading

HEADROOM = 0.6  # of the time left to the deadline, what the estimated wait may fill (a flood slows the passes)
ALPHA = 0.2  # weight of the newest pass (or tokenized request) in the averages
CHARS_PER_TOKEN = 3.0  # before any text is tokenized: fewer characters a token than English has (4-5)
MIN_CHARS_PER_TOKEN = 1.0  # a token never spans less than a character, whatever the tokenizer counted
MAX_RETRY_AFTER = 3600
RETRY_SPREAD = 0.5  # a refusal's Retry-After: the estimate plus a random 0 to this much of it again
_RNG = random.Random()


def spread(seconds: int, rng: random.Random | None = None) -> float:
    """The wait to send for an estimated ``seconds``: ``seconds`` plus a random whole number of
    seconds from 0 to ``RETRY_SPREAD`` of it (to at least 1), plus a random fraction of a second;
    ``seconds`` as it is when ``RETRY_SPREAD`` is 0; at most ``MAX_RETRY_AFTER``. Its whole
    seconds are the ``Retry-After``, its milliseconds the ``Retry-After-Ms``."""
    if RETRY_SPREAD <= 0:
        return float(min(MAX_RETRY_AFTER, seconds))
    draw = rng or _RNG
    extra = max(1, math.ceil(seconds * RETRY_SPREAD))
    return min(float(MAX_RETRY_AFTER), seconds + draw.randint(0, extra) + draw.random())


def retry_after_headers(wait: float) -> tuple[int, int]:
    """A refusal's ``Retry-After`` (the whole seconds of ``wait``, at least 1) and ``Retry-After-Ms``
    (its milliseconds, rounded down, so they fall in that same second)."""
    ms = int(wait * 1000)
    return max(1, ms // 1000), ms


class WaitEstimator:
    """One model's throughput and characters-per-token estimates, and the admission verdict on them.

    Thread-safe: passes are observed from batch threads, requests judged on the event loop."""

    def __init__(self) -> None:
        self.chars_per_token = CHARS_PER_TOKEN
        self._tokens = 0.0  # weighted averages over the passes: tokens per pass (times side by side)
        self._seconds = 0.0  # and seconds per pass
        self._tokenized = False  # chars_per_token is still the guess
        self._lock = threading.Lock()

    @property
    def tokens_per_second(self) -> float | None:
        """The model's recent throughput; None before a pass has been measured."""
        return self._tokens / self._seconds if self._seconds > 0 else None

    def observe_pass(self, tokens: int, seconds: float, side_by_side: int = 1) -> None:
        """A forward pass of ``tokens`` took ``seconds`` while ``side_by_side`` passes ran."""
        if tokens <= 0 or seconds <= 0:
            return
        work = tokens * max(1, side_by_side)
        with self._lock:
            if self._seconds == 0:
                self._tokens, self._seconds = work, seconds
            else:
                self._tokens += ALPHA * (work - self._tokens)
                self._seconds += ALPHA * (seconds - self._seconds)

    def observe_tokenized(self, chars: int, tokens: int) -> None:
        """``chars`` characters made ``tokens`` tokens (before truncation)."""
        if chars <= 0 or tokens <= 0:
            return
        ratio = max(MIN_CHARS_PER_TOKEN, chars / tokens)
        with self._lock:
            if not self._tokenized:
                self.chars_per_token, self._tokenized = ratio, True
            else:
                self.chars_per_token += ALPHA * (ratio - self.chars_per_token)

    def tokens_for(self, chars: int, texts: int = 1, cap: int | None = None) -> float:
        """The model work ``chars`` characters in ``texts`` texts are expected to make; with ``cap``
        (the tokens the model reads of one text, when it truncates), at most ``cap`` a text."""
        tokens = chars / self.chars_per_token
        return tokens if cap is None else min(tokens, float(texts * cap))

    def wait(self, ahead: float, own: float) -> float | None:
        """Seconds until a request of ``own`` tokens behind ``ahead`` tokens is computed; None before
        any pass has been measured."""
        rate = self.tokens_per_second
        return None if rate is None else (ahead + own) / rate

    def verdict(self, ahead: float, own: float, seconds_left: float | None) -> int | None:
        """None to admit the request; else the Retry-After (whole seconds, at least 1) to refuse it with.

        ``ahead``: tokens queued, in passes and being tokenized before it; ``own``: its tokens;
        ``seconds_left``: to its deadline (None: no deadline)."""
        if seconds_left is None or ahead <= 0:
            return None
        if seconds_left <= 0:
            return 1
        rate = self.tokens_per_second
        if rate is None:  # cold: nothing to judge by yet
            return None
        budget = HEADROOM * seconds_left
        if (ahead + own) / rate <= budget:
            return None
        # Once this much of the work ahead has drained, the request would fit (arrivals aside).
        drain = (ahead + own) / rate - budget
        return min(MAX_RETRY_AFTER, max(1, math.ceil(drain - 1e-9)))  # 2.0000000000000004 s is 2 s

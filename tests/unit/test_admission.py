"""The wait estimator (admission.py) on plain numbers, and the batcher admitting by it with a fake forward pass."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence

import pytest

from embedserve import admission
from embedserve.admission import (
    CHARS_PER_TOKEN,
    HEADROOM,
    MAX_RETRY_AFTER,
    WaitEstimator,
    retry_after_headers,
    spread,
)
from embedserve.batching import Batcher, BatchLimits
from embedserve.engines.tokenization import Tokens
from embedserve.errors import Overloaded


def test_cold_start_admits_everything_until_a_pass_is_measured() -> None:
    estimator = WaitEstimator()
    assert estimator.tokens_per_second is None
    assert estimator.verdict(0, 10**9, 5.0) is None  # alone: always admitted
    assert estimator.verdict(10**9, 100, 5.0) is None  # nothing measured: no ground to refuse on
    estimator.observe_pass(100, 1.0)
    assert estimator.verdict(10**9, 100, 5.0) is not None


def test_a_refusal_sends_the_client_back_after_the_estimate_plus_up_to_half_of_it_again() -> None:
    rng = random.Random(7)
    assert {int(spread(1, rng)) for _ in range(200)} == {1, 2}  # at least a second of spread
    assert {int(spread(10, rng)) for _ in range(500)} == set(range(10, 16))
    assert {int(spread(65, rng)) for _ in range(2000)} == set(range(65, 99))  # 65 + ceil(32.5)
    assert spread(MAX_RETRY_AFTER, rng) == MAX_RETRY_AFTER  # capped


def test_within_its_whole_second_a_refusal_s_wait_is_spread_to_the_millisecond() -> None:
    rng = random.Random(11)
    fractions = [spread(1, rng) % 1 for _ in range(400)]
    # clients told the same Retry-After come back over that whole second, not at its start
    assert min(fractions) < 0.1 and max(fractions) > 0.9
    assert len({round(f, 3) for f in fractions}) > 300


def test_the_two_headers_of_a_wait_fall_in_the_same_second() -> None:
    assert retry_after_headers(65.9999999) == (65, 65999)  # rounded down, never into the next second
    assert retry_after_headers(3.0) == (3, 3000)
    assert retry_after_headers(0.25) == (1, 250)  # Retry-After says at least a second


def test_without_a_spread_the_estimate_is_sent_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "RETRY_SPREAD", 0)
    assert {spread(3) for _ in range(50)} == {3.0}


def test_a_truncated_text_counts_as_no_more_than_the_model_reads() -> None:
    estimator = WaitEstimator()
    estimator.observe_tokenized(4000, 1000)  # 4 characters a token, learnt before truncation
    assert estimator.tokens_for(4000) == 1000
    assert estimator.tokens_for(150 * 100_000, texts=150, cap=512) == 150 * 512
    assert estimator.tokens_for(400, texts=2, cap=512) == 100  # short texts: their own tokens


def test_without_a_deadline_nothing_is_refused() -> None:
    estimator = WaitEstimator()
    estimator.observe_pass(100, 1.0)
    assert estimator.verdict(10**9, 10**9, None) is None


def test_admits_what_fits_in_the_headroom_of_the_deadline_and_refuses_the_rest() -> None:
    estimator = WaitEstimator()
    estimator.observe_pass(1000, 1.0)  # 1000 tokens/s
    assert estimator.tokens_per_second == 1000
    seconds_left = 4.0
    fits = HEADROOM * seconds_left * 1000
    assert estimator.verdict(fits - 100, 100, seconds_left) is None
    # 2 s more work than fits: retry once that much has drained
    assert estimator.verdict(fits + 2000 - 100, 100, seconds_left) == 2
    assert estimator.verdict(fits + 2500 - 100, 100, seconds_left) == 3
    assert estimator.verdict(fits + 1, 100, seconds_left) == 1  # a sliver over: at least 1 s
    assert estimator.verdict(100, 100, 0.0) == 1  # the deadline has passed


def test_throughput_is_a_moving_average_counting_passes_side_by_side() -> None:
    estimator = WaitEstimator()
    estimator.observe_pass(1000, 1.0, side_by_side=2)
    assert estimator.tokens_per_second == 2000
    estimator.observe_pass(10, 0.1)  # a small pass (100 tokens/s) moves it a little: tokens weigh
    assert 1500 < estimator.tokens_per_second < 2000
    for _ in range(50):
        estimator.observe_pass(500, 1.0)
    assert estimator.tokens_per_second == pytest.approx(500, rel=1e-3)
    estimator.observe_pass(0, 1.0)  # an empty pass says nothing
    estimator.observe_pass(10, 0.0)
    assert estimator.tokens_per_second == pytest.approx(500, rel=1e-3)
    assert estimator.wait(400, 100) == pytest.approx(1.0, rel=1e-3)


def test_characters_per_token_start_low_and_learn_from_tokenized_requests() -> None:
    estimator = WaitEstimator()
    assert estimator.tokens_for(300) == 300 / CHARS_PER_TOKEN
    estimator.observe_tokenized(400, 100)  # the first request replaces the guess
    assert estimator.chars_per_token == 4.0
    for _ in range(60):
        estimator.observe_tokenized(500, 100)
    assert estimator.chars_per_token == pytest.approx(5.0, rel=1e-3)
    estimator.observe_tokenized(0, 10)
    estimator.observe_tokenized(10, 0)
    assert estimator.chars_per_token == pytest.approx(5.0, rel=1e-3)


def _units(n: int, length: int) -> list[Tokens]:
    return [Tokens([1] * length, [0] * length, length) for _ in range(n)]


class Held:
    """A forward pass that waits for ``gate`` and takes ``seconds`` per pass."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: Sequence[Tokens]) -> list[int]:
        self.gate.wait(5)
        time.sleep(self.seconds)  # the model's compute time, which the estimator measures
        return [0] * len(batch)


@pytest.mark.anyio
async def test_the_batcher_refuses_work_that_would_miss_its_deadline_and_counts_what_is_ahead() -> None:
    forward = Held(0.01)
    batcher = Batcher("m", forward, BatchLimits(max_batch_size=4, max_batch_tokens=400, max_wait_ms=0))
    try:
        await batcher.submit(_units(4, 100))  # one measured pass: 400 tokens in ~10 ms
        rate = batcher.estimator.tokens_per_second
        assert rate is not None and rate > 0
        forward.gate.clear()  # hold the next pass; queue work behind it
        queued = [asyncio.ensure_future(batcher.submit(_units(4, 100))) for _ in range(3)]
        while batcher.queue_depth < 8:  # one batch in the held pass, two queued
            await asyncio.sleep(0.001)
        ahead = 1200  # tokens queued and in the pass
        deadline_fits = time.monotonic() + 2 * ahead / rate / HEADROOM
        with batcher.incoming(30, deadline_fits):
            pass
        deadline_short = time.monotonic() + 0.1 * ahead / rate
        with pytest.raises(Overloaded) as refused, batcher.incoming(30, deadline_short):
            pass
        assert refused.value.retry_after >= 1 and "deadline" in refused.value.message
        with batcher.incoming(30, None):  # no deadline: admitted whatever is ahead
            pass
        forward.gate.set()
        await asyncio.gather(*queued)
        with batcher.incoming(30, deadline_short):  # the queue has drained: admitted again
            pass
    finally:
        forward.gate.set()
        batcher.close()


@pytest.mark.anyio
async def test_a_longer_request_still_tokenizing_is_not_ahead_of_a_shorter_one() -> None:
    """The tokenizers take the shortest jobs first: a short request reaches the queue before a long
    one still being tokenized, so only the requests no longer than it count as ahead of it."""
    batcher = Batcher("m", Held(0.01), BatchLimits(max_batch_size=4, max_batch_tokens=400, max_wait_ms=0))
    try:
        await batcher.submit(_units(4, 100))  # one measured pass
        rate = batcher.estimator.tokens_per_second
        assert rate is not None
        deadline = time.monotonic() + 10.0
        long_chars = int(1000 * rate * CHARS_PER_TOKEN)  # 1000 s of work, were it all read
        with batcher.incoming(long_chars, deadline):
            with batcher.incoming(30, deadline):  # shorter: not behind the long one
                pass
            with pytest.raises(Overloaded), batcher.incoming(long_chars, deadline):  # as long: behind it
                pass
    finally:
        batcher.close()

"""The batch-selection policy on plain lists: no threads, no clocks."""

from __future__ import annotations

from embedserve.batch_policy import choice_cap, select_batch, window_size
from embedserve.engines.tokenization import Tokens


def queue(*lengths: int, group: int = 0) -> list[Tokens]:
    return [Tokens([0] * n, [1] * n, n, group) for n in lengths]


def costs(waiting: list[Tokens], chosen: list[int]) -> list[int]:
    return [waiting[i].cost for i in chosen]


def test_an_empty_queue_gives_nothing() -> None:
    assert select_batch([], 8, 100) == []


def test_the_oldest_goes_first_then_the_closest_lengths() -> None:
    waiting = queue(10, 50, 11, 9, 30)
    assert costs(waiting, select_batch(waiting, 3, 10_000)) == [10, 11, 9]


def test_a_unit_longer_than_the_budget_still_goes_alone() -> None:
    waiting = queue(40, 3)
    assert select_batch(waiting, 8, 16) == [0]


def test_padded_tokens_are_the_longest_times_the_size() -> None:
    waiting = queue(10, 10, 10, 60)  # all four: 4 x 60 = 240 padded, 90 unpadded
    assert costs(waiting, select_batch(waiting, 8, 100)) == [10, 10, 10]
    assert costs(waiting, select_batch(waiting, 8, 100, padded=False)) == [10, 10, 10, 60]


def test_only_the_oldest_units_group_shares_its_pass() -> None:
    waiting = [*queue(3), *queue(3, group=5), *queue(3)]
    assert select_batch(waiting, 8, 100) == [0, 2]


def test_a_long_queue_leaves_the_widest_units_for_the_next_pass() -> None:
    lengths = [4] + [10 + 3 * i for i in range(20)]  # 21 waiting: a pass takes 13, then none wider
    chosen = select_batch(queue(*lengths), 64, 10_000)
    assert len(chosen) == choice_cap(21) == 13
    assert sorted(costs(queue(*lengths), chosen)) == lengths[:13]


def test_past_the_share_units_that_add_no_padding_still_go() -> None:
    lengths = [7] + [5] * 20 + [7] * 20  # after 60%, only more 7s (no wider than the batch)
    chosen = select_batch(queue(*lengths), 64, 10_000)
    assert len(chosen) == 41


def test_an_engine_that_does_not_pad_takes_the_whole_window() -> None:
    lengths = [4] + [10 + 3 * i for i in range(20)]
    assert len(select_batch(queue(*lengths), 64, 10_000, padded=False)) == 21


def test_the_window_is_four_batches_of_the_oldest() -> None:
    assert window_size(2) == 9
    waiting = queue(5, *[50] * 8, 5)  # the second 5 is the tenth unit: outside the window
    assert costs(waiting, select_batch(waiting, 2, 10_000)) == [5, 50]

"""Batch plans: balanced token batches (BATCH_TOKENS -1, the default), batches filled up to a token budget
(BATCH_TOKENS > 0) and length-grouped rows (BATCH_TOKENS 0)."""
import math
import random

import pytest

from common.batching import (AUTO_BATCH_TOKENS, LengthGroupedSampler, TokenBudgetBatchSampler, batches_per_epoch,
                             epoch_batches, largest_batch_tokens, padded_length, padded_tokens, token_batches,
                             token_budget_batches)
from common.errors import SettingsError
from common.settings import TrainSettings
from common.training import total_steps


def _batches(sampler, batch_size):
    order = list(sampler)
    return order, [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_grouped_batches_cover_every_row_once_with_little_padding():
    lengths = [(i * 37) % 500 + 20 for i in range(203)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=1, window=64)
    order, batches = _batches(sampler, 8)
    assert sorted(order) == list(range(203)) and len(sampler) == 203
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    random_order = [list(range(203))[i:i + 8] for i in range(0, 203, 8)]
    padded_random = sum(max(lengths[i] for i in b) * len(b) for b in random_order)
    assert padded < 0.7 * padded_random  # grouped by length: far fewer pad tokens
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch first: an OOM shows at once


def test_each_epoch_has_its_own_order_and_a_resumed_run_the_same_one():
    lengths = [i % 97 for i in range(300)]
    a, b = LengthGroupedSampler(lengths, 4, seed=3), LengthGroupedSampler(lengths, 4, seed=3)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(b) == list(a)


def test_token_budget_batches_fill_the_budget_and_cover_every_row_once():
    lengths = [(i * 389) % 2000 + 48 for i in range(500)]  # 48..2047 tokens, as in a folder of papers
    batches = token_budget_batches(lengths, 16384, multiple=64)
    assert sorted(i for b in batches for i in b) == list(range(500))
    widths = [padded_length(max(lengths[i] for i in b), 64) for b in batches]
    assert all(len(b) * w <= 16384 for b, w in zip(batches, widths))
    assert len(batches[0]) == 8  # the longest rows: 8 x 2048
    assert max(len(b) for b in batches) > 4 * 8  # short rows: many to a batch
    # each batch but the last is nearly full: the steps do about the same work whatever the lengths
    assert all(len(b) * w > 16384 - w for b, w in zip(batches[:-1], widths[:-1]))
    # about as many padded tokens as real ones, against 8-row batches in random order
    real = sum(lengths)
    assert sum(len(b) * w for b, w in zip(batches, widths)) < 1.1 * real


def test_a_row_longer_than_the_budget_gets_a_batch_of_its_own():
    assert token_budget_batches([3000, 100, 100], 1024, multiple=64) == [[0], [1, 2]]


def test_token_budget_epochs_reorder_the_same_batches_longest_first():
    lengths = [(i * 53) % 700 + 10 for i in range(300)]
    sampler = TokenBudgetBatchSampler(lengths, 2048, seed=5)
    first = list(sampler)
    assert len(first) == len(sampler) == batches_per_epoch(lengths, batch_size=8, batch_tokens=2048)
    assert max(lengths[i] for i in first[0]) == max(lengths)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(map(sorted, second)) == sorted(map(sorted, first))
    # the CPU loop's batches are the same
    assert epoch_batches(lengths, batch_size=8, batch_tokens=2048, seed=5, epoch=1) == second


def test_steps_per_epoch_follow_the_batching():
    lengths = [100] * 64 + [1000] * 8
    rows = TrainSettings.defaults(batch_size=8, batch_tokens=0, num_epochs=2.0, max_steps=-1,
                                  gradient_accumulation_steps=1)
    tokens = rows.replace(batch_tokens=8192)
    assert total_steps(lengths, rows) == 2 * 9
    assert total_steps(lengths, tokens) == 2 * 2  # 64 rows of 128 padded tokens, then 8 of 1024
    rows = dict(batch_size=8, batch_tokens=0, seed=0)
    assert epoch_batches(lengths, **rows, epoch=0) != epoch_batches(lengths, **rows, epoch=1)


@pytest.mark.parametrize("seed", range(6))
def test_auto_token_batches_keep_the_steps_of_batch_size_rows(seed):
    """What the model learns must not depend on the batching: as many optimizer steps as BATCH_SIZE rows give."""
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(20, 300), rng.randint(300, 2048)]) for _ in range(rng.randint(1, 700))]
    for batch_size in (1, 3, 4, 8):
        rows = TrainSettings.defaults(batch_size=batch_size, batch_tokens=0, num_epochs=2.0, max_steps=-1,
                                      gradient_accumulation_steps=2)
        auto = rows.replace(batch_tokens=AUTO_BATCH_TOKENS)
        assert total_steps(lengths, auto) == total_steps(lengths, rows)
        batches = epoch_batches(lengths, batch_size=batch_size, batch_tokens=AUTO_BATCH_TOKENS, seed=seed, epoch=1)
        assert len(batches) == math.ceil(len(lengths) / batch_size)  # exactly, whatever the lengths
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest row first: an OOM shows at once
        sampler = TokenBudgetBatchSampler(lengths, AUTO_BATCH_TOKENS, seed=seed, batch_size=batch_size)
        sampler.set_epoch(1)
        assert list(sampler) == batches  # the GPU trainer's batches are the CPU loop's


def test_auto_token_batches_spread_the_tokens_evenly_and_shrink_the_largest_batch():
    rng = random.Random(0)
    lengths = [rng.randint(216, 2048) for _ in range(640)]  # like the bench's long-var rows
    batches = token_batches(lengths, batch_size=8, batch_tokens=AUTO_BATCH_TOKENS)
    tokens = [padded_tokens(b, lengths) for b in batches]
    assert len(batches) == 80 and max(tokens) < 1.1 * sum(tokens) / len(tokens)
    # rows sorted by length: hardly any padding, against padded_length(2048) x 8 for 8-row batches of the longest
    assert sum(tokens) < 1.05 * sum(padded_length(n, 64) for n in lengths)
    assert largest_batch_tokens(lengths, batch_size=8, batch_tokens=AUTO_BATCH_TOKENS) == max(tokens) < 0.65 * 8 * 2048
    assert largest_batch_tokens(lengths, batch_size=8, batch_tokens=0) == 8 * 2048


def test_a_negative_budget_other_than_auto_says_what_to_set():
    with pytest.raises(SettingsError, match="BATCH_TOKENS must be -1"):
        token_batches([10, 20], batch_size=2, batch_tokens=-5)

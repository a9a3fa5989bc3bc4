"""Batch plans: length-grouped batches (GPU default) and batches filled up to a token budget (BATCH_TOKENS)."""
from common.batching import (LengthGroupedSampler, TokenBudgetBatchSampler, batches_per_epoch, epoch_batches,
                             padded_length, token_budget_batches)
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

"""The GPU path's pieces that run anywhere: the length-grouped batch order and the availability check."""
from common.training_gpu import LengthGroupedSampler, unsloth_available


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


def test_unsloth_availability_says_why_not():
    import torch
    ok, why = unsloth_available()
    if torch.cuda.is_available():
        assert ok or "Unsloth" in why
    else:
        assert not ok and why == "no CUDA GPU"

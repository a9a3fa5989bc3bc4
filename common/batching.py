"""Which rows go into each training batch. Shared by the CPU loop and the GPU trainer.

- BATCH_SIZE rows per batch (the default): shuffled rows (CPU) or rows of similar length (GPU, LengthGroupedSampler).
- BATCH_TOKENS > 0: batches of rows of similar length, as many rows as fit in BATCH_TOKENS padded tokens. Short
  rows then come many to a batch, so each step does about the same work, whatever the lengths (see bench/README.md).
"""
import math
import random


def padded_length(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (the width a padded batch with this longest row gets)."""
    return -(-n // multiple) * multiple if multiple and multiple > 1 else n


def token_budget_batches(lengths: list[int], max_tokens: int, multiple: int = 64) -> list[list[int]]:
    """Row indices, longest first, cut into batches whose rows x padded width stay within max_tokens (a row longer
    than that gets a batch of its own). The batches are the same every epoch; only their order changes, so the
    number of steps per epoch is known before training."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, start = [], 0
    while start < len(order):
        width = max(1, padded_length(lengths[order[start]], multiple))
        rows = max(1, max_tokens // width)
        batches.append(order[start:start + rows])
        start += rows
    return batches


def epoch_rng(seed: int, epoch: int):
    """The random order of one epoch: the same for the same seed and epoch (so a resumed run repeats it)."""
    return random.Random(seed * 1000003 + epoch)


def shuffle_batches(batches: list[list[int]], seed: int, epoch: int) -> list[list[int]]:
    """The batches in the order of one epoch (seeded by seed and epoch), the one with the longest row first, so
    that a run that will not fit in memory stops at its first step."""
    rng = epoch_rng(seed, epoch)
    rest = list(batches[1:])
    rng.shuffle(rest)
    return list(batches[:1]) + rest


def random_batches(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled row indices of one epoch, cut into batches of batch_size (the same for the same seed and epoch)."""
    import torch
    generator = torch.Generator().manual_seed(seed + epoch)
    return [chunk.tolist() for chunk in torch.randperm(n_rows, generator=generator).split(batch_size)]


def epoch_batches(lengths: list[int], *, batch_size: int, batch_tokens: int, seed: int, epoch: int,
                  multiple: int = 64) -> list[list[int]]:
    """The CPU loop's batches for one epoch: by token budget when batch_tokens > 0, else batch_size random rows."""
    if batch_tokens and batch_tokens > 0:
        return shuffle_batches(token_budget_batches(lengths, batch_tokens, multiple), seed, epoch)
    return random_batches(len(lengths), batch_size, seed, epoch)


def batches_per_epoch(lengths: list[int], *, batch_size: int, batch_tokens: int, multiple: int = 64) -> int:
    if batch_tokens and batch_tokens > 0:
        return len(token_budget_batches(lengths, batch_tokens, multiple))
    return math.ceil(len(lengths) / batch_size)


class TokenBudgetBatchSampler:
    """A DataLoader batch_sampler over token_budget_batches, in a new order each epoch (`set_epoch`, which the
    Trainer calls, also when a run resumes)."""

    def __init__(self, lengths, max_tokens, seed=0, multiple=64):
        self.batches, self.seed, self.epoch = token_budget_batches(lengths, max_tokens, multiple), seed, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(shuffle_batches(self.batches, self.seed, self.epoch))


class LengthGroupedSampler:
    """Row order for padded batches of similar length: shuffle, cut into windows of `window` batches, sort each
    window by length, cut it into batches of `batch_size`, then shuffle the batches (the longest batch first, so
    that a run that will not fit in memory stops at once). Few pad tokens, and no long-rows-first drift over an
    epoch (transformers' own group_by_length sorts windows of 50 batches longest first, i.e. a whole small
    dataset). `set_epoch` (called by the Trainer through accelerate) gives each epoch its own order, the same one
    again when a run resumes."""

    def __init__(self, lengths, batch_size, seed=0, window=64):
        self.lengths, self.batch_size, self.seed, self.window, self.epoch = list(lengths), batch_size, seed, window, 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.lengths)

    def __iter__(self):
        rng = epoch_rng(self.seed, self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        size = self.batch_size * self.window
        batches, tail = [], []
        for start in range(0, len(order), size):
            chunk = sorted(order[start:start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size:
            tail = batches.pop()  # a short last batch stays last: the DataLoader cuts batches in this order
        rng.shuffle(batches)
        if batches:
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches.insert(0, batches.pop(longest))
        return iter([i for batch in batches + [tail] for i in batch])

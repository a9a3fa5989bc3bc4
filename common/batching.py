"""Which rows go into each training batch. Shared by the CPU loop and the GPU trainer.

- BATCH_TOKENS = -1 (AUTO_BATCH_TOKENS, the default): ceil(rows / BATCH_SIZE) batches an epoch, the steps that
  BATCH_SIZE rows a batch give, each of rows of similar length and about the same padded tokens (balanced_batches).
  So the steps, and what the model learns from them, do not depend on the batching; only the padding and the
  spread of work over the steps do.
- BATCH_TOKENS > 0: batches of rows of similar length, as many rows as fit in BATCH_TOKENS padded tokens. Short
  rows then come many to a batch, so each step does about the same work, whatever the lengths, but an epoch of
  short rows has fewer steps (see bench/README.md).
- BATCH_TOKENS = 0: BATCH_SIZE rows per batch: shuffled rows (CPU) or rows of similar length (GPU,
  LengthGroupedSampler).
"""
import math
import random

from .errors import SettingsError


def padded_length(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple` (the width a padded batch with this longest row gets)."""
    return -(-n // multiple) * multiple if multiple and multiple > 1 else n


def token_budget_batches(lengths: list[int], max_tokens: int, multiple: int = 64) -> list[list[int]]:
    """Row indices, longest first, cut into batches whose rows x padded width stay within max_tokens (a row longer
    than that gets a batch of its own). The batches are the same every epoch; only their order changes, so the
    number of steps per epoch is known before training."""
    order = longest_first(lengths)
    return [order[start:end] for start, end in budget_cuts([lengths[i] for i in order], max_tokens, multiple)]


def longest_first(lengths: list[int]) -> list[int]:
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def budget_cuts(sorted_lengths: list[int], max_tokens: int, multiple: int) -> list[tuple[int, int]]:
    """(start, end) of each batch over lengths sorted longest first: as many rows as fit in max_tokens."""
    cuts, start = [], 0
    while start < len(sorted_lengths):
        rows = max(1, max_tokens // max(1, padded_length(sorted_lengths[start], multiple)))
        cuts.append((start, min(start + rows, len(sorted_lengths))))
        start += rows
    return cuts


AUTO_BATCH_TOKENS = -1  # BATCH_TOKENS that asks for balanced_batches


def padded_tokens(batch: list[int], lengths: list[int], multiple: int = 64) -> int:
    """Tokens of a padded batch: its rows x its longest row, rounded up to `multiple`."""
    return len(batch) * padded_length(max(lengths[i] for i in batch), multiple)


def balanced_batches(lengths: list[int], n_batches: int, multiple: int = 64) -> list[list[int]]:
    """Row indices, longest first, cut into exactly n_batches batches of rows of similar length and about the same
    padded tokens: token_budget_batches at the smallest budget that gives at most n_batches (the number of
    batches only falls as the budget grows, so a binary search finds it), then the batch of most padded tokens
    halved until there are n_batches (a larger budget can cut two batches fewer at once)."""
    if not lengths:
        return []
    n_batches = max(1, min(n_batches, len(lengths)))
    order = longest_first(lengths)
    ordered = [lengths[i] for i in order]
    rows_each = -(-len(lengths) // n_batches)  # this many rows in every batch always fit in n_batches
    low, high = 1, rows_each * padded_length(max(ordered[0], 1), multiple)
    while low < high:
        budget = (low + high) // 2
        if len(budget_cuts(ordered, budget, multiple)) <= n_batches:
            high = budget
        else:
            low = budget + 1
    batches = [order[start:end] for start, end in budget_cuts(ordered, low, multiple)]
    while len(batches) < n_batches:  # a batch's first row is its longest
        fullest = max((b for b in range(len(batches)) if len(batches[b]) > 1),
                      key=lambda b: len(batches[b]) * padded_length(lengths[batches[b][0]], multiple))
        rows = batches[fullest]
        batches[fullest:fullest + 1] = [rows[:len(rows) // 2], rows[len(rows) // 2:]]
    return batches


def token_batches(lengths: list[int], *, batch_size: int, batch_tokens: int, multiple: int = 64) -> list[list[int]]:
    """The batches of rows of similar length that BATCH_TOKENS asks for, in plan order (the longest row first):
    AUTO_BATCH_TOKENS: ceil(rows / batch_size) balanced batches; > 0: batches filled up to that many padded tokens."""
    if batch_tokens == AUTO_BATCH_TOKENS:
        return balanced_batches(lengths, math.ceil(len(lengths) / batch_size), multiple)
    if batch_tokens < 0:
        raise SettingsError(f"BATCH_TOKENS must be -1 (auto), 0 (BATCH_SIZE rows) or a number of padded tokens, "
                            f"e.g. 16384, not {batch_tokens}.")
    return token_budget_batches(lengths, batch_tokens, multiple)


def largest_batch_tokens(lengths: list[int], *, batch_size: int, batch_tokens: int, multiple: int = 64) -> int:
    """Padded tokens of an epoch's largest batch (for BATCH_SIZE rows: batch_size of the longest rows)."""
    if not lengths:
        return 0
    if batch_tokens:
        batches = token_batches(lengths, batch_size=batch_size, batch_tokens=batch_tokens, multiple=multiple)
        return max(padded_tokens(b, lengths, multiple) for b in batches)
    return min(batch_size, len(lengths)) * padded_length(max(lengths), multiple)


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
    """The CPU loop's batches for one epoch: token_batches when batch_tokens is set, else batch_size random rows."""
    if batch_tokens:
        return shuffle_batches(token_batches(lengths, batch_size=batch_size, batch_tokens=batch_tokens,
                                             multiple=multiple), seed, epoch)
    return random_batches(len(lengths), batch_size, seed, epoch)


def batches_per_epoch(lengths: list[int], *, batch_size: int, batch_tokens: int, multiple: int = 64) -> int:
    """Batches in an epoch: ceil(rows / batch_size), except with a token budget (BATCH_TOKENS > 0)."""
    if batch_tokens and batch_tokens > 0:
        return len(token_budget_batches(lengths, batch_tokens, multiple))
    return math.ceil(len(lengths) / batch_size)


class TokenBudgetBatchSampler:
    """A DataLoader batch_sampler over token_batches (max_tokens: BATCH_TOKENS, AUTO_BATCH_TOKENS included), in a
    new order each epoch (`set_epoch`, which the Trainer calls, also when a run resumes)."""

    def __init__(self, lengths, max_tokens, seed=0, multiple=64, batch_size=1):
        self.batches = token_batches(lengths, batch_size=batch_size, batch_tokens=max_tokens, multiple=multiple)
        self.seed, self.epoch = seed, 0

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

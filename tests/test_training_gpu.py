"""The GPU path's pieces that run anywhere: the availability check, the choice of batching, the token count (its
batch plans: tests/test_batching.py)."""
import subprocess
import sys

import pytest

from common.errors import SettingsError
from common.models import unsloth_available
from common.settings import TrainSettings
from common.training_gpu import BATCHINGS, TokenCounter, choose_batching


def test_unsloth_availability_says_why_not():
    import torch
    ok, why = unsloth_available()
    if torch.cuda.is_available():
        assert ok or "Unsloth" in why
    else:
        assert not ok and why == "no CUDA GPU"


def test_batching_defaults_to_tokens_with_a_token_budget_or_auto_else_grouped():
    settings = TrainSettings.defaults(batch_tokens=0)
    assert choose_batching(None, settings) == "grouped"
    assert choose_batching(None, settings.replace(batch_tokens=4096)) == "tokens"
    assert choose_batching(None, settings.replace(batch_tokens=-1)) == "tokens"  # 02's default
    for batching in BATCHINGS:  # asked for: kept, whatever BATCH_TOKENS says
        assert choose_batching(batching, settings.replace(batch_tokens=4096)) == batching


def test_token_batches_without_a_budget_or_an_unknown_batching_say_what_to_set():
    for batching in ("tokens", "packed"):
        with pytest.raises(SettingsError, match="BATCH_TOKENS"):
            choose_batching(batching, TrainSettings.defaults(batch_tokens=0))
    with pytest.raises(SettingsError, match="grouped, packed, padded, padding_free, tokens"):
        choose_batching("flat", TrainSettings.defaults())


def test_token_counter_counts_each_training_forward_once_and_only_inside_its_block():
    import torch

    class Base(torch.nn.Module):
        def forward(self, input_ids=None, attention_mask=None):
            return input_ids.float().sum()

    class Wrapper(torch.nn.Module):  # like a PEFT model: its forward calls the base model's
        def __init__(self):
            super().__init__()
            self.base = Base()

        def get_base_model(self):
            return self.base

        def forward(self, **kwargs):
            return self.base(**kwargs)

    model, counter = Wrapper().train(), TokenCounter(pad_token_id=0)
    batch = {"input_ids": torch.tensor([[5, 6, 0], [7, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    with counter.hooked(model):
        model(**batch)
        model.base(input_ids=torch.tensor([[3, 4, 0, 9]]))  # padding-free: a flattened row, no mask
        with torch.no_grad():
            model(**batch)  # not a training forward
    model(**batch)  # unhooked
    assert counter.count() == 3 + 3 and counter.depth == 0


def test_importing_the_gpu_path_imports_no_unsloth_transformers_or_trl():
    """Unsloth must be imported before transformers and trl to patch them, so the module must not import them."""
    code = ("import sys, common.training_gpu; print(sorted(m for m in ('unsloth', 'transformers', 'trl', 'peft') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

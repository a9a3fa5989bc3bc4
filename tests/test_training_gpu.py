"""The GPU path's piece that runs anywhere: the availability check (its batch plans: tests/test_batching.py)."""
from common.training_gpu import unsloth_available


def test_unsloth_availability_says_why_not():
    import torch
    ok, why = unsloth_available()
    if torch.cuda.is_available():
        assert ok or "Unsloth" in why
    else:
        assert not ok and why == "no CUDA GPU"

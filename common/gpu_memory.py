"""Gradient checkpointing on the GPU path (GRADIENT_CHECKPOINTING): whether a run needs it, and going on without it.

Without checkpointing, each decoder layer keeps its activations for the backward pass; with Unsloth's ("unsloth"),
only each layer's input is kept (offloaded to CPU memory) and the layer's forward runs again in the backward: about
2N more FLOPs a token on the 4N a frozen base needs (N: the matrix weights), +42-44% tokens/s without it on an
H200 (see bench/README.md), for memory that a large card has to spare. "auto" turns it off where the largest batch's
activations fit in the free GPU memory, and turns it back on if the run runs out of memory all the same.
"""
from typing import Callable, Optional, TypeVar

from .errors import SettingsError

GRADIENT_CHECKPOINTINGS = ("auto", "unsloth", "true", "false")
UNSLOTH_VALUES = {"unsloth": "unsloth", "true": True, "false": False}  # Unsloth's use_gradient_checkpointing
FREE_MEMORY_SHARE = 0.75  # "auto" runs without checkpointing where the activations take at most this share of it
Result = TypeVar("Result")


def activation_bytes(*, tokens: int, layers: int, hidden: int, intermediate: int) -> int:
    """GPU memory the activations of one batch of `tokens` padded tokens hold without checkpointing: about
    4 x hidden + 3 x intermediate bf16 values a token in each layer (Unsloth's LoRA Llama blocks; on the H200,
    checkpointing off against "unsloth": 24.6 GiB more at 16,384 tokens on the SmolLM2-1.7B shape, this says 24.0;
    28.1 GiB at 8,192 tokens on Llama-3.1-8B's, this says 29.0)."""
    return 2 * tokens * layers * (4 * hidden + 3 * intermediate)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def check_mode(mode: str) -> None:
    if mode not in GRADIENT_CHECKPOINTINGS:
        raise SettingsError(f"GRADIENT_CHECKPOINTING must be one of {', '.join(GRADIENT_CHECKPOINTINGS)}, "
                            f"not {mode!r}.")


def loaded_checkpointing(mode: str) -> str | bool:
    """Unsloth's use_gradient_checkpointing to load the model with: "auto" loads with Unsloth's (so that it can be
    turned on again after an out-of-memory), and the training decides."""
    check_mode(mode)
    return UNSLOTH_VALUES.get(mode, "unsloth")


def choose_gradient_checkpointing(mode: str, *, activations: int, free: int) -> tuple[str, str]:
    """(the checkpointing a run uses: "unsloth", "true" or "false"; why). A mode other than "auto" is kept; "auto":
    "false" where the largest batch's `activations` take at most FREE_MEMORY_SHARE of the `free` GPU memory (the
    rest: logits, LoRA gradients, the optimizer, the allocator's slack), else "unsloth"."""
    check_mode(mode)
    if mode != "auto":
        return mode, "as set (GRADIENT_CHECKPOINTING)"
    sizes = f"the largest batch's activations, ~{gib(activations)}, against {gib(free)} of free GPU memory"
    if activations <= FREE_MEMORY_SHARE * free:
        return "false", f"auto: {sizes}: they fit"
    return "unsloth", f"auto: {sizes}: they do not fit in {FREE_MEMORY_SHARE:.0%} of it"


def is_out_of_memory(error: BaseException) -> bool:
    return "out of memory" in str(error).lower()


def train_or_fall_back(train: Callable[[str], Result], checkpointing: str, *,
                       fallback: Optional[str]) -> tuple[Result, str]:
    """(train(checkpointing), checkpointing); where that runs out of GPU memory and there is a `fallback` (auto
    chose "false"), (train(fallback), fallback) instead. `train` starts each try afresh (it frees what a failed one
    left). The longest batch comes first, so a run that does not fit fails at its first step, before any update."""
    try:
        return train(checkpointing), checkpointing
    except Exception as error:
        if fallback is None or not is_out_of_memory(error):
            raise
    return train(fallback), fallback

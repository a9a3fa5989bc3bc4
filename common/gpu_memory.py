"""What the GPU path spends memory on: the base model's weights in 4 or 16 bits (LOAD_IN_4BIT), gradient
checkpointing (GRADIENT_CHECKPOINTING), and going on without it.

QLoRA's 4-bit base is for fitting a model in a card's memory; where the 16-bit weights fit with room to spare, a
16-bit base learns more and trains as fast (bench/README.md: the embedded model on the H200, question recall 56%
against 37.5%; the Llama-3.1-8B shape, 16,452 against 16,288 tokens/s). "auto" loads 16-bit weights where they take
at most SIXTEEN_BIT_SHARE of the free GPU memory (so an 8B model on an 80 GB card, QLoRA on a 24 or 48 GB one).

Without checkpointing, each decoder layer keeps its activations for the backward pass; with Unsloth's ("unsloth"),
only each layer's input is kept (offloaded to CPU memory) and the layer's forward runs again in the backward: about
2N more FLOPs a token on the 4N a frozen base needs (N: the matrix weights), +42-44% tokens/s without it on an
H200 (see bench/README.md), for memory that a large card has to spare. "auto" turns it off where the largest batch's
activations fit in the free GPU memory, and turns it back on if the run runs out of memory all the same.

MEAN_OF_RUNS's runs train side by side (RUNS_SIDE_BY_SIDE "auto") where the card holds them all: a small model's
step is mostly Python and kernel launches, so one run leaves the card idle most of the time, and several runs in
their own processes each train about as fast as one alone (bench/README.md).
"""
import json
import math
from pathlib import Path
from typing import Callable, Optional, TypeVar

from .errors import SettingsError

UNSLOTH_VALUES = {"unsloth": "unsloth", "true": True, "false": False}  # Unsloth's use_gradient_checkpointing
PROCESS_BYTES = 2**30  # a process's own GPU memory beyond its tensors: CUDA context, cuBLAS workspace, kernels
SIXTEEN_BIT_SHARE = 0.25  # "auto" loads 16-bit weights where they take at most this share of the free GPU memory
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


def uses_4bit(value: str | bool) -> bool:
    """A resolved LOAD_IN_4BIT ("true"/"false"; True/False as adapters of older versions saved it)."""
    if value == "auto":
        raise SettingsError("LOAD_IN_4BIT auto is decided before the model loads (gpu_memory.with_load_in_4bit).")
    return value in (True, "true")


def weight_bytes_16bit(model_path: str | Path) -> Optional[int]:
    """Bytes of the model's weights in 16 bits, read from safetensors headers (no weights loaded): a local folder's,
    or a Hub repo's through the Hub's API; None where that is not known (offline, other weight files, weights
    stored quantized)."""
    folder = Path(model_path)
    if not folder.is_dir():
        return _hub_weight_bytes(str(model_path))
    config = folder / "config.json"
    if not config.is_file() or "quantization_config" in json.loads(config.read_text()):
        return None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open
    count = 0
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            count += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    return 2 * count


def _hub_weight_bytes(repo_id: str) -> Optional[int]:
    try:
        from huggingface_hub import get_safetensors_metadata
        counts = get_safetensors_metadata(repo_id).parameter_count
    except Exception:  # offline, no such repo, no safetensors: not known
        return None
    if "4bit" in repo_id.lower() or any(dtype in counts for dtype in ("U8", "I8", "F8_E4M3")):
        return None  # stored quantized
    return 2 * sum(counts.values())


def choose_load_in_4bit(value: str | bool, *, weight_bytes: Optional[int], free: int) -> tuple[bool, str]:
    """(whether to load the base in 4 bits; why). "true"/"false" are kept; "auto": 16-bit where the 16-bit
    `weight_bytes` take at most SIXTEEN_BIT_SHARE of the `free` GPU memory, else 4-bit (also where the size is not
    known)."""
    if value != "auto":
        return uses_4bit(value), "as set (LOAD_IN_4BIT)"
    if weight_bytes is None:
        return True, "auto: the 16-bit size of the weights is not known here (a Hub name, or stored quantized): QLoRA"
    sizes = f"the 16-bit weights, {gib(weight_bytes)}, against {gib(free)} of free GPU memory"
    if weight_bytes <= SIXTEEN_BIT_SHARE * free:
        return False, f"auto: {sizes}: 16-bit LoRA"
    return True, f"auto: {sizes}: more than {SIXTEEN_BIT_SHARE:.0%} of it, so QLoRA (4-bit)"


def free_gpu_memory() -> int:
    """Bytes free on this process's GPU; 0 where torch sees none."""
    import torch
    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0


def decide_load_in_4bit(value: str | bool, model_path: str | Path) -> tuple[bool, str]:
    """choose_load_in_4bit with this GPU's free memory and, for "auto", the model's 16-bit size."""
    weight_bytes = weight_bytes_16bit(model_path) if value == "auto" else None
    return choose_load_in_4bit(value, weight_bytes=weight_bytes, free=free_gpu_memory())


def with_load_in_4bit(settings, model_path: str | Path, device: str):
    """`settings` with LOAD_IN_4BIT decided ("true" or "false") for a run on `device`, saying which and why; the
    adapter records it, so that 03 loads the base as it was trained (an adapter made elsewhere, read with 02's
    "auto", is decided there the same way). The CPU path trains 32-bit weights: unchanged."""
    if device != "cuda":
        return settings
    from .distributed import say
    four, why = decide_load_in_4bit(settings.load_in_4bit, model_path)
    say(f"Base weights: {'4-bit (QLoRA)' if four else '16-bit (LoRA)'}, {why}")
    return settings.replace(load_in_4bit="true" if four else "false")


def loaded_checkpointing(mode: str) -> str | bool:
    """Unsloth's use_gradient_checkpointing to load the model with: "auto" loads with Unsloth's (so that it can be
    turned on again after an out-of-memory), and the training decides."""
    return UNSLOTH_VALUES.get(mode, "unsloth")


def choose_gradient_checkpointing(mode: str, *, activations: int, free: int) -> tuple[str, str]:
    """(the checkpointing a run uses: "unsloth", "true" or "false"; why). A mode other than "auto" is kept; "auto":
    "false" where the largest batch's `activations` take at most FREE_MEMORY_SHARE of the `free` GPU memory (the
    rest: logits, LoRA gradients, the optimizer, the allocator's slack), else "unsloth"."""
    if mode != "auto":
        return mode, "as set (GRADIENT_CHECKPOINTING)"
    sizes = f"the largest batch's activations, ~{gib(activations)}, against {gib(free)} of free GPU memory"
    if activations <= FREE_MEMORY_SHARE * free:
        return "false", f"auto: {sizes}: they fit"
    return "unsloth", f"auto: {sizes}: they do not fit in {FREE_MEMORY_SHARE:.0%} of it"


def choose_runs_side_by_side(mode: str, *, runs: int, device: str, run_bytes: int, activations: int,
                             free: int) -> tuple[bool, str]:
    """(whether `runs` runs train at once, each in its own process; why). "true"/"false" are kept; "auto": on a CUDA
    GPU, where the other runs' processes (`run_bytes` each: weights, LoRA and optimizer; plus their `activations`
    and PROCESS_BYTES) and this process's activations take at most FREE_MEMORY_SHARE of the `free` GPU memory."""
    if runs < 2 or mode == "false":
        return False, "one after the other" + (" (RUNS_SIDE_BY_SIDE false)" if runs > 1 else "")
    if mode == "true":
        return True, "side by side, as set (RUNS_SIDE_BY_SIDE)"
    if device != "cuda":
        return False, "one after the other (auto: on the CPU each run takes every core)"
    need = (runs - 1) * (run_bytes + activations + PROCESS_BYTES) + activations
    sizes = f"{runs} runs need ~{gib(need)} more, against {gib(free)} of free GPU memory"
    if need <= FREE_MEMORY_SHARE * free:
        return True, f"side by side (auto: {sizes})"
    return False, f"one after the other (auto: {sizes}: more than {FREE_MEMORY_SHARE:.0%} of it)"


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

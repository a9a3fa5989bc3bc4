"""Several processes (torchrun / accelerate launch): who am I, and who writes.

The launchers set RANK, LOCAL_RANK and WORLD_SIZE; the trainer shards the data. Only the main process
(rank 0) writes checkpoints, the adapter, reports and logs, and prints (through `say`); the others stay quiet.
"""
import contextlib
import functools
import os

from .errors import LaunchError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def check_launch(device: str, gpu_count: int | None = None) -> None:
    """Stop early where several processes were launched but cannot each have a GPU."""
    n = world_size()
    if n == 1:
        return
    if device != "cuda":
        raise LaunchError(f"{n} processes were launched (WORLD_SIZE={n}), but training runs on the CPU: several "
                          f"processes need one CUDA GPU each. Run the script without torchrun/accelerate on the CPU.")
    if gpu_count is None:
        import torch
        gpu_count = torch.cuda.device_count()
    if local_rank() >= gpu_count:
        raise LaunchError(f"Process LOCAL_RANK={local_rank()} has no GPU: this machine has {gpu_count}. Launch at "
                          f"most {gpu_count} processes per node (--nproc_per_node / --num_processes).")


def say(*args, **kwargs) -> None:
    """print() on the main process only: the pipeline's messages, once however many processes run."""
    if is_main_process():
        print(*args, **kwargs)


def main_process_only(write):
    """Decorate a function that writes outputs: it runs on the main process only (None elsewhere)."""

    @functools.wraps(write)
    def guarded(*args, **kwargs):
        return write(*args, **kwargs) if is_main_process() else None
    return guarded


def main_process_first():
    """Context: the main process runs the block first (e.g. tokenizing into a cache), then the others."""
    if world_size() == 1:
        return contextlib.nullcontext()
    from accelerate import PartialState
    return PartialState().main_process_first()

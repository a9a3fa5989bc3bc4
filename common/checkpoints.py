"""Checkpoints of the CPU loop, and finding the one to resume from (CPU and GPU write `checkpoint-<step>`).

A CPU checkpoint holds the adapter weights plus `cpu_state.pt`: optimizer, scheduler, RNG and the data
position (epoch, batch), so a resumed run continues exactly where the killed one stopped.
"""
import os
import re
import shutil
from pathlib import Path

STATE_FILE = "cpu_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(output_dir):
    """Complete checkpoints under `<output_dir>/checkpoints`, oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("checkpoint-*") if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir):
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(output_dir, model, optimizer, scheduler, state):
    """Write `checkpoint-<step>` atomically (a kill mid-write leaves the previous one as the latest)."""
    import torch
    final = Path(output_dir) / "checkpoints" / f"checkpoint-{state['step']}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save({**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state()}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_checkpoint(path, model, optimizer, scheduler):
    """Restore adapter weights, optimizer, scheduler and RNG; returns the saved loop state."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    set_peft_model_state_dict(model, load_file(str(Path(path) / "adapter_model.safetensors")))
    state = torch.load(Path(path) / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    torch.set_rng_state(state.pop("rng"))
    return state


def prune_checkpoints(output_dir, keep, best_step=None):
    """Keep the last `keep` checkpoints, and the best one (lowest eval loss) whatever its age."""
    dirs = checkpoint_dirs(output_dir)
    for path in dirs[:-keep] if keep > 0 else []:
        if best_step is None or path.name != f"checkpoint-{best_step}":
            shutil.rmtree(path, ignore_errors=True)

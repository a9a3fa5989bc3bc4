"""Checkpoints of the CPU loop, and finding the one to resume from (CPU and GPU write `checkpoint-<step>`).

A CPU checkpoint holds the adapter weights plus `cpu_state.pt`: optimizer, scheduler, RNG and the data
position (epoch, batch), so a resumed run continues exactly where the killed one stopped.
`checkpoints/run.json` says what they were trained with (run_identity): 02 run again with other settings or data
starts over rather than go on from them, and sets them aside.
"""
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from .cpt import trains_embeddings
from .errors import TrainingError

STATE_FILE = "cpu_state.pt"
RUN_FILE = "run.json"  # in the checkpoints folder: the settings and data its checkpoints were trained with
SET_ASIDE = "checkpoints-previous"  # where the checkpoints of a run with other settings or data go
# settings that change where a run writes or what it logs, not what it trains
BOOKKEEPING = {"dataset_dir", "output_dir", "logging_steps", "eval_steps", "save_steps", "save_total_limit", "evaluate",
               "report_to", "push_to_hub", "hub_model_id", "resume", "device", "runs_side_by_side", "mean_of_runs",
               "gradient_checkpointing", "offload_embedding"}
_NAME = re.compile(r"^checkpoint-(\d+)$")


def run_identity(s, rows: list[dict]) -> dict:
    """What a run trains with: every setting that changes the training (decided values, not auto) and a hash of its
    tokenized rows (the dataset and the self-replay as mixed)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps([row["input_ids"], row.get("labels")]).encode())
    return {"settings": {k: v for k, v in s.as_dict().items() if k not in BOOKKEEPING}, "rows": digest.hexdigest()}


def identity_changes(saved: dict | None, identity: dict) -> list[str]:
    """What differs between a saved run identity and this one, in words ([] where the same, or none was saved)."""
    if not saved:
        return []
    changes = [f"{k.upper()} {saved['settings'].get(k)!r} -> {v!r}" for k, v in identity["settings"].items()
               if saved["settings"].get(k) != v]
    return changes + ["the training rows (the dataset or the self-replay)"] * (saved.get("rows") != identity["rows"])


def saved_identity(output_dir) -> dict | None:
    path = Path(output_dir) / "checkpoints" / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def save_identity(output_dir, identity: dict) -> None:
    path = Path(output_dir) / "checkpoints" / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=1))


def set_aside_checkpoints(output_dir) -> Path:
    """Move the checkpoints folder to SET_ASIDE (replacing an older one there): kept, and out of the new run's way."""
    aside = Path(output_dir) / SET_ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(Path(output_dir) / "checkpoints", aside)
    return aside


def checkpoint_dirs(output_dir) -> list[Path]:
    """Complete checkpoints under `<output_dir>/checkpoints`, oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("checkpoint-*") if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1] if dirs else None


def save_checkpoint(output_dir, model, optimizer, scheduler, state: dict) -> Path:
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


def load_checkpoint(path, model, optimizer, scheduler) -> dict:
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


def prune_checkpoints(output_dir, keep: int, best_step: int | None = None) -> None:
    """Keep the last `keep` checkpoints, and the best one (lowest eval loss) whatever its age."""
    dirs = checkpoint_dirs(output_dir)
    for path in dirs[:-keep] if keep > 0 else []:
        if best_step is None or path.name != f"checkpoint-{best_step}":
            shutil.rmtree(path, ignore_errors=True)


def check_output_space(output_dir, model_path, s) -> int:
    """Stop before training when the disk cannot hold the checkpoints (adapter + optimizer state, x limit)."""
    config_file = Path(model_path) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    hidden, layers = config.get("hidden_size", 4096), config.get("num_hidden_layers", 32)
    inter = config.get("intermediate_size", 4 * hidden)
    lora_params = layers * s.lora_r * (4 * 2 * hidden + 3 * (hidden + inter))
    if trains_embeddings(s):  # embed_tokens / lm_head trained whole: both where untied
        lora_params += config.get("vocab_size", 32000) * hidden * (1 if config.get("tie_word_embeddings") else 2)
    need = lora_params * 4 * 3 * (max(1, s.save_total_limit) + 2)  # fp32 weights + Adam moments, per copy
    need *= max(1, s.mean_of_runs)  # each of MEAN_OF_RUNS runs keeps its own checkpoints
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(output_dir).free
    if free < need:
        raise TrainingError(f"Not enough disk space in {output_dir}: {free / 2**20:.0f} MiB free, about "
                            f"{need / 2**20:.0f} MiB needed for the adapter and checkpoints. Free some space, choose "
                            f"another --output-dir, or lower SAVE_TOTAL_LIMIT.")
    return need

"""MEAN_OF_RUNS: the adapter as the mean LoRA update of several training runs, each from its own seed (its LoRA start
and batch order). What a run learns of the papers is mostly the same from seed to seed; much of its drift elsewhere
(confident invented answers to everyday questions) is its own, and averages away: on the embedded model (H200),
3 runs kept 88% of the everyday answers at the question recall that one run reaches keeping 77-79%
(bench/README.md). Each run trains in its own folder (run-1, run-2, ...) and leaves its update there when done, so
an interrupted 02 resumes in the run it was in.

AUTO (-1, the default of MEAN_OF_RUNS and ADAPTER_SCALE) decides by the device: 3 runs on a CUDA GPU, where training
is cheap and the mean of 3 at scale 1 beat one run at 0.8 by about 10 points of question and cloze recall for the
same everyday answers kept (H100, 02 itself, bench/README.md 2026-12-06); one run on the CPU, where 3 would triple
the demo. ADAPTER_SCALE then follows: 1 for a mean of runs (the mean already forgets less), 0.8 for one run.
"""
from pathlib import Path

from .adapter import lora_update, reset_lora, set_mean_update
from .cpt import EMBEDDING_MODULES, trains_embeddings
from .distributed import is_main_process, say
from .errors import SettingsError
from .selection import epoch_choice
from .settings import TrainSettings
from .training import resume_checkpoint, train_model

UPDATE_FILE = "run.pt"  # a finished run's A and B, log and epoch measures, in its folder
AUTO = -1  # MEAN_OF_RUNS / ADAPTER_SCALE: decided by with_mean_of_runs
GPU_RUNS = 3  # MEAN_OF_RUNS auto on a CUDA GPU
ONE_RUN_SCALE = 0.8  # ADAPTER_SCALE auto for one run; a mean of runs keeps its update whole


def auto_runs(s: TrainSettings, device: str) -> tuple[int, str]:
    """MEAN_OF_RUNS auto: (runs, why)."""
    if device != "cuda":
        return 1, "one run on the CPU (--mean-of-runs 3 forgets less, at 3x the time)"
    if s.training_mode != "sft" or s.init_adapter or trains_embeddings(s):
        return 1, "one run: a mean of runs is for fresh LoRA sft runs (no INIT_ADAPTER, cpt or whole embeddings)"
    return GPU_RUNS, f"{GPU_RUNS} runs on the GPU, their mean update kept (forgets less; --mean-of-runs 1: a third " \
                     "of the time)"


def with_mean_of_runs(s: TrainSettings, device: str) -> tuple[TrainSettings, str]:
    """`s` with MEAN_OF_RUNS and ADAPTER_SCALE decided where they are AUTO, and a line saying what was chosen."""
    runs, why = auto_runs(s, device) if s.mean_of_runs == AUTO else (s.mean_of_runs, "as set")
    scale = s.adapter_scale if s.adapter_scale != AUTO else 1.0 if runs > 1 else ONE_RUN_SCALE
    return s.replace(mean_of_runs=runs, adapter_scale=scale), \
        f"MEAN_OF_RUNS {runs} ({why}), ADAPTER_SCALE {scale:g}" + (" (auto)" if s.adapter_scale == AUTO else "") + "."


def check_mean_of_runs(s: TrainSettings) -> None:
    if s.mean_of_runs < 1:
        raise SettingsError(f"MEAN_OF_RUNS must be -1 (auto), 1 (one run, as trained) or more, not {s.mean_of_runs}.")
    whole = sorted(set(s.target_modules) & set(EMBEDDING_MODULES))
    if s.mean_of_runs > 1 and whole:
        raise SettingsError(f"MEAN_OF_RUNS > 1 keeps the mean of the runs' LoRA updates, and {', '.join(whole)} in "
                            "TARGET_MODULES is trained whole, not as LoRA: set --mean-of-runs 1, or leave "
                            f"{', '.join(whole)} out of TARGET_MODULES.")
    if s.mean_of_runs > 1 and s.init_adapter:
        raise SettingsError("MEAN_OF_RUNS > 1 starts each run from a fresh LoRA, so it cannot go on from "
                            f"INIT_ADAPTER {s.init_adapter}: set --mean-of-runs 1, or leave INIT_ADAPTER out.")


def run_settings(s: TrainSettings, run: int) -> TrainSettings:
    """The settings of run `run` (0, 1, ...): its own seed and folder; one run alone is 02's settings as they are."""
    if s.mean_of_runs == 1:
        return s
    return s.replace(seed=s.seed + run, output_dir=str(Path(s.output_dir) / f"run-{run + 1}"))


def joined_history(history: list[dict], earlier: list[dict], run: int) -> list[dict]:
    """A run's log after the earlier runs': its steps and tokens counted on from theirs, each entry tagged."""
    step = max([h.get("step", 0) for h in earlier] or [0])
    tokens = max([h.get("tokens", 0) for h in earlier] or [0])
    return earlier + [{**h, "run": run + 1,
                       **({"step": h["step"] + step} if "step" in h else {}),
                       **({"tokens": h["tokens"] + tokens} if "tokens" in h else {})} for h in history]


def train_one_run(model, tokenizer, rows: list[dict], s: TrainSettings, *, device: str, eval_rows: list[dict],
                  held_out: list[dict]) -> tuple[list[dict], list[dict]]:
    """One run from its last checkpoint in s.output_dir, keeping its best epoch where KEEP_BEST_EPOCH is on: its log
    history and its epochs' measures."""
    choice = epoch_choice(model, tokenizer, s, forgetting=held_out)  # None where KEEP_BEST_EPOCH is off
    steps = train_model(model, tokenizer, rows, s, device=device, eval_rows=eval_rows,
                        resume_from=resume_checkpoint(s.output_dir, s.resume),
                        on_epoch_end=choice.measure if choice else None)
    if not choice:
        return steps, []
    say(choice.keep_best(model))
    return steps, choice.epochs


def train_runs(model, tokenizer, rows: list[dict], s: TrainSettings, *, device: str, eval_rows: list[dict],
               held_out: list[dict]) -> tuple[list[dict], list[dict]]:
    """Train MEAN_OF_RUNS runs of `model`'s LoRA on `rows` (each keeping its best epoch where KEEP_BEST_EPOCH is on),
    then leave their mean update in `model`. Returns the joined log history and the epoch choices' measures."""
    if s.mean_of_runs == 1:
        return train_one_run(model, tokenizer, rows, s, device=device, eval_rows=eval_rows, held_out=held_out)
    import torch
    history, epochs, updates = [], [], []
    for run in range(s.mean_of_runs):
        r = run_settings(s, run)
        saved = Path(r.output_dir) / UPDATE_FILE
        if s.resume and saved.exists():
            say(f"Run {run + 1} of {s.mean_of_runs} was finished before: its update read from {saved}.")
            done = torch.load(saved)
            updates.append(done["update"])
            history, epochs = joined_history(done["history"], history, run), epochs + done["epochs"]
            continue
        say(f"Run {run + 1} of {s.mean_of_runs} (seed {r.seed}), in {r.output_dir}.")
        if run:
            reset_lora(model, r.seed)
        steps, chosen = train_one_run(model, tokenizer, rows, r, device=device, eval_rows=eval_rows,
                                      held_out=held_out)
        chosen = [{**e, "run": run + 1} for e in chosen]
        history, epochs = joined_history(steps, history, run), epochs + chosen
        updates.append(lora_update(model))
        if is_main_process():
            saved.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"update": updates[-1], "history": steps, "epochs": chosen}, saved)
    say(set_mean_update(model, updates))
    return history, epochs

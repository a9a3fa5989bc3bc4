"""MEAN_OF_RUNS: the adapter as the mean LoRA update of several training runs, each from its own seed (its LoRA start
and batch order). What a run learns of the papers is mostly the same from seed to seed; much of its drift elsewhere
(confident invented answers to everyday questions) is its own, and averages away: on the embedded model (H200),
3 runs kept 88% of the everyday answers at the question recall that one run reaches keeping 77-79%
(bench/README.md). Each run trains in its own folder (run-1, run-2, ...) and leaves its update there when done, so
an interrupted 02 resumes in the run it was in. Where the GPU has room for them all (RUNS_SIDE_BY_SIDE), the runs
train at the same time, each in its own process: for a small model, much faster (H200, the embedded model: 3 runs in
78 s side by side, 142 s one after the other; bench/README.md 2026-12-07).

AUTO (-1, the default of MEAN_OF_RUNS and ADAPTER_SCALE) decides by the device: 3 runs on a CUDA GPU, where training
is cheap and the mean of 3 at scale 1 beat one run at 0.8 by about 10 points of question and cloze recall for the
same everyday answers kept (H100, 02 itself, bench/README.md 2026-12-06); one run on the CPU, where 3 would triple
the demo. ADAPTER_SCALE then follows: 1 for a mean of runs (the mean already forgets less), 0.8 for one run.
"""
import os
import sys
from pathlib import Path

from .adapter import lora_update, reset_lora, set_mean_update
from .checkpoints import identity_changes, run_identity
from .cpt import EMBEDDING_MODULES, trains_embeddings
from .distributed import is_main_process, say, world_size
from .errors import SettingsError, TrainingError
from .gpu_memory import choose_runs_side_by_side
from .selection import epoch_choice
from .settings import AUTO, TrainSettings
from .training import load_model_for_training, resume_checkpoint, train_model

UPDATE_FILE = "run.pt"  # a finished run's A and B, log and epoch measures, in its folder
LOG_FILE = "train.log"  # what a run trained in its own process (RUNS_SIDE_BY_SIDE) printed, in its folder
GPU_RUNS = 3  # MEAN_OF_RUNS auto on a CUDA GPU
ONE_RUN_SCALE = 0.8  # ADAPTER_SCALE auto for one run; a mean of runs keeps its update whole


def auto_runs(s: TrainSettings, device: str) -> tuple[int, str]:
    """MEAN_OF_RUNS auto: (runs, why)."""
    if device != "cuda":
        return 1, "one run on the CPU (--mean-of-runs 3 forgets less, at 3x the time)"
    if s.training_mode != "sft" or s.init_adapter or trains_embeddings(s):
        return 1, "one run: a mean of runs is for fresh LoRA sft runs (no INIT_ADAPTER, cpt or whole embeddings)"
    return GPU_RUNS, f"{GPU_RUNS} runs on the GPU, their mean update kept (forgets less; --mean-of-runs 1: one run)"


def with_mean_of_runs(s: TrainSettings, device: str) -> tuple[TrainSettings, str]:
    """`s` with MEAN_OF_RUNS and ADAPTER_SCALE decided where they are AUTO, and a line saying what was chosen."""
    runs, why = auto_runs(s, device) if s.mean_of_runs == AUTO else (s.mean_of_runs, "as set")
    scale = s.adapter_scale if s.adapter_scale != AUTO else 1.0 if runs > 1 else ONE_RUN_SCALE
    return s.replace(mean_of_runs=runs, adapter_scale=scale), \
        f"MEAN_OF_RUNS {runs} ({why}), ADAPTER_SCALE {scale:g}" + (" (auto)" if s.adapter_scale == AUTO else "") + "."


def check_mean_of_runs(s: TrainSettings) -> None:
    """A mean of several runs where its runs could not be averaged (their range is checked by TrainSettings)."""
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
    resume_from = resume_checkpoint(s.output_dir, s.resume, run_identity(s, rows))  # first: it may set old ones aside
    choice = epoch_choice(model, tokenizer, s, forgetting=held_out, resumed=bool(resume_from))  # None: not kept
    steps = train_model(model, tokenizer, rows, s, device=device, eval_rows=eval_rows, resume_from=resume_from,
                        on_epoch_end=choice.measure if choice else None)
    if not choice:
        return steps, []
    say(choice.keep_best(model))
    return steps, choice.epochs


def decide_side_by_side(model, rows: list[dict], s: TrainSettings, *, device: str) -> tuple[bool, str]:
    """RUNS_SIDE_BY_SIDE decided for this run (gpu_memory.choose_runs_side_by_side) with this card's figures: the
    loaded model's GPU memory (each other run's process loads its own), the largest batch's activations, the free
    memory."""
    if world_size() > 1:
        return False, "one after the other (several processes were launched: each trains every run on its GPU)"
    figures = {"run_bytes": 0, "activations": 0, "free": 0}
    if device == "cuda" and s.runs_side_by_side == "auto":
        import torch
        from .training_gpu import PAD_TO_MULTIPLE_OF, batch_activations, choose_batching, free_gpu_memory
        figures = {"run_bytes": torch.cuda.memory_allocated(), "free": free_gpu_memory(),
                   "activations": batch_activations(model, [len(r["input_ids"]) for r in rows], s,
                                                    batching=choose_batching(None, s), multiple=PAD_TO_MULTIPLE_OF)}
    return choose_runs_side_by_side(s.runs_side_by_side, runs=s.mean_of_runs, device=device, **figures)


def train_in_own_process(model_path: str, rows: list[dict], r: TrainSettings, *, run: int, device: str,
                         eval_rows: list[dict], held_out: list[dict]) -> None:
    """A child process's work: load the model, train run `run` with settings `r`, save its update in its folder.
    Everything it prints goes to its folder's LOG_FILE."""
    log = open(Path(r.output_dir) / LOG_FILE, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    from .models import choose_device, load_tokenizer
    device = choose_device(device)  # first: Unsloth is imported before transformers
    model = load_model_for_training(model_path, r, device)
    reset_lora(model, r.seed)  # the start run `run` has one after the other
    train_and_save_run(model, load_tokenizer(model_path), rows, r, run=run, device=device, eval_rows=eval_rows,
                       held_out=held_out)


def start_runs(runs: list[int], model_path: str, rows: list[dict], s: TrainSettings, *, device: str,
               eval_rows: list[dict], held_out: list[dict]) -> dict:
    """One process per run in `runs` (spawned: CUDA cannot be forked), started: {run: process}."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    started = {}
    for run in runs:
        r = run_settings(s, run)
        Path(r.output_dir).mkdir(parents=True, exist_ok=True)
        started[run] = context.Process(target=train_in_own_process, args=(model_path, rows, r),
                                       kwargs=dict(run=run, device=device, eval_rows=eval_rows, held_out=held_out),
                                       name=f"run-{run + 1}")
        started[run].start()
    return started


def wait_for_run(process, r: TrainSettings, *, run: int, runs: int) -> None:
    process.join()
    if process.exitcode != 0:
        raise TrainingError(f"Run {run + 1} of {runs} stopped in its own process (exit code {process.exitcode}); its "
                            f"log: {Path(r.output_dir) / LOG_FILE}. Run 02 again to go on from its checkpoints, or "
                            "set --runs-side-by-side false to train the runs one after the other in this process.")


def stop_runs(processes: dict) -> None:
    """Stop runs still training (this process failed or was interrupted); their checkpoints stay for a resume."""
    for process in processes.values():
        if process.is_alive():
            process.terminate()
            process.join()


def train_and_save_run(model, tokenizer, rows: list[dict], r: TrainSettings, *, run: int, device: str,
                       eval_rows: list[dict], held_out: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """Train run `run` (train_one_run), then write its update, log and epoch measures (tagged with the run) to its
    folder: (its log, its tagged epoch measures, its update)."""
    import torch
    steps, chosen = train_one_run(model, tokenizer, rows, r, device=device, eval_rows=eval_rows, held_out=held_out)
    chosen, update = [{**e, "run": run + 1} for e in chosen], lora_update(model)
    if is_main_process():
        saved = Path(r.output_dir) / UPDATE_FILE
        saved.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"update": update, "history": steps, "epochs": chosen, "identity": run_identity(r, rows)}, saved)
    return steps, chosen, update


def finished_update(r: TrainSettings, rows: list[dict]) -> dict | None:
    """What run `r` left in its folder (its update, log and epoch measures) where it was trained with these settings
    and rows; None where it left nothing, or trained with other settings or data (then it trains again)."""
    import torch
    saved = Path(r.output_dir) / UPDATE_FILE
    if not saved.exists():
        return None
    done = torch.load(saved)
    changes = identity_changes(done.get("identity"), run_identity(r, rows))
    if changes:
        say(f"The update in {saved} was trained with other settings or data ({'; '.join(changes[:3])}): "
            "that run trains again.")
    return None if changes else done


def train_runs(model, tokenizer, rows: list[dict], s: TrainSettings, *, device: str, eval_rows: list[dict],
               held_out: list[dict], model_path: str) -> tuple[list[dict], list[dict]]:
    """Train MEAN_OF_RUNS runs of `model`'s LoRA on `rows` (each keeping its best epoch where KEEP_BEST_EPOCH is on),
    then leave their mean update in `model`. This process trains the first run not finished before; with
    RUNS_SIDE_BY_SIDE, the others train at the same time, each in its own process loading `model_path`. Returns the
    joined log history and the epoch choices' measures."""
    if s.mean_of_runs == 1:
        return train_one_run(model, tokenizer, rows, s, device=device, eval_rows=eval_rows, held_out=held_out)
    import torch
    n = s.mean_of_runs
    finished = {run: done for run in range(n) if s.resume and (done := finished_update(run_settings(s, run), rows))}
    pending = [run for run in range(n) if run not in finished]
    together, why = decide_side_by_side(model, rows, s, device=device) if len(pending) > 1 else (False, "")
    others = start_runs(pending[1:], model_path, rows, s, device=device, eval_rows=eval_rows,
                        held_out=held_out) if together else {}
    if others:
        logs = ", ".join(str(Path(run_settings(s, run).output_dir) / LOG_FILE) for run in others)
        say(f"Runs {', '.join(str(run + 1) for run in pending)} of {n} train {why}; runs "
            f"{', '.join(str(run + 1) for run in others)} in their own processes (logs: {logs}).")
    history, epochs, updates = [], [], []
    try:
        for run in range(n):
            r = run_settings(s, run)
            saved = Path(r.output_dir) / UPDATE_FILE
            if run in others:
                wait_for_run(others[run], r, run=run, runs=n)
            if run not in pending or run in others:
                how = "trained side by side" if run in others else "was finished before"
                say(f"Run {run + 1} of {n} {how}: its update read from {saved}.")
                done = finished.get(run) or torch.load(saved)  # a run side by side saved it just now
                updates.append(done["update"])
                history, epochs = joined_history(done["history"], history, run), epochs + done["epochs"]
                continue
            say(f"Run {run + 1} of {n} (seed {r.seed}), in {r.output_dir}.")
            if run:
                reset_lora(model, r.seed)
            steps, chosen, update = train_and_save_run(model, tokenizer, rows, r, run=run, device=device,
                                                       eval_rows=eval_rows, held_out=held_out)
            updates.append(update)
            history, epochs = joined_history(steps, history, run), epochs + chosen
    finally:
        stop_runs(others)
    say(set_mean_update(model, updates))
    return history, epochs

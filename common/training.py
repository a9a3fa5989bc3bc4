"""Train a LoRA adapter on tokenized rows: the CPU loop, and the choice between it and the GPU path.

Two paths, same data, same formatting, same adapter format:
- CUDA + Unsloth (common/training_gpu.py): FastLanguageModel (QLoRA or 16-bit LoRA), TRL SFTTrainer.
- CPU: transformers + PEFT in a plain PyTorch loop (TRL on the CPU was measured ~100x slower).
"""
import functools
import math
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from .batching import batches_per_epoch, epoch_batches
from .checkpoints import (identity_changes, latest_checkpoint, load_checkpoint, prune_checkpoints,
                          save_checkpoint, save_identity, saved_identity, set_aside_checkpoints)
from .cpt import EMBEDDING_MODULES, embedding_learning_rate
from .distributed import is_main_process, main_process_first, say
from .errors import TrainingError
from .settings import AUTO, TrainSettings, decided_learning_rate
from .tokenizing import IGNORE_INDEX, pad_batch
from .tracking import cpu_tracker, tracking_environment


SMALL_MODEL = 10**9  # parameters: LEARNING_RATE auto is SMALL_MODEL_LEARNING_RATE below, LORA_LEARNING_RATE from it
SMALL_MODEL_LEARNING_RATE = 2e-3  # chosen by the knowledge check on the embedded 135M model (bench/README.md)
LORA_LEARNING_RATE = 2e-4  # the usual LoRA rate of 1B+ models (QLoRA's 7B and 13B runs, Unsloth's notebooks)


def choose_learning_rate(value: float, *, parameters: Optional[int]) -> tuple[float, str]:
    """(LEARNING_RATE, why): a number is kept; auto goes by the model's size. A small model needs a larger rate to
    learn the papers in two epochs; at 1B and more that rate makes the tune forget and drift."""
    if value != AUTO:
        return value, "as set"
    if parameters is None:
        return LORA_LEARNING_RATE, "auto: the model's size is not known here, so the usual LoRA rate"
    size = f"{parameters / 1e9:.2f}B parameters"
    if parameters < SMALL_MODEL:
        return SMALL_MODEL_LEARNING_RATE, f"auto: {size}, under {SMALL_MODEL / 1e9:g}B"
    return LORA_LEARNING_RATE, f"auto: {size}, the usual LoRA rate from {SMALL_MODEL / 1e9:g}B"


def with_learning_rate(s: TrainSettings, model_path: str) -> tuple[TrainSettings, str]:
    """`s` with LEARNING_RATE decided for this model (choose_learning_rate), and a line saying which and why."""
    from .models import parameter_count
    rate, why = choose_learning_rate(s.learning_rate,
                                     parameters=parameter_count(model_path) if s.learning_rate == AUTO else None)
    return s.replace(learning_rate=rate), f"LEARNING_RATE {rate:g} ({why})."


def total_steps(lengths: list[int], s: TrainSettings) -> int:
    """Optimizer steps of a run over rows of these lengths (MAX_STEPS, else NUM_EPOCHS passes)."""
    if s.max_steps and s.max_steps > 0:
        return s.max_steps
    batches = batches_per_epoch(lengths, batch_size=s.batch_size, batch_tokens=s.batch_tokens)
    return max(1, math.ceil(math.ceil(batches / s.gradient_accumulation_steps) * s.num_epochs))


def lora_config(s: TrainSettings):
    """LoRA on s.target_modules; embed_tokens / lm_head there are trained whole (modules_to_save, tied where the
    model ties them), as Unsloth does."""
    from peft import LoraConfig
    whole = [m for m in s.target_modules if m in EMBEDDING_MODULES]
    return LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                      target_modules=[m for m in s.target_modules if m not in whole], use_rslora=s.use_rslora,
                      bias="none", task_type="CAUSAL_LM", modules_to_save=whole or None,
                      ensure_weight_tying=bool(whole))


def optimizer_groups(model, s: TrainSettings) -> list[dict]:
    """AdamW's parameter groups: the LoRA weights at LEARNING_RATE; a whole embedding or LM head, where trained, at
    EMBEDDING_LEARNING_RATE (Unsloth's continued-pretraining recipe)."""
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    whole = [p for name, p in trained if name.endswith("modules_to_save.default.weight")]
    rate = decided_learning_rate(s)
    groups = [{"params": [p for _, p in trained if not any(p is w for w in whole)], "lr": rate}]
    if whole:
        groups.append({"params": whole, "lr": embedding_learning_rate(s) or rate})
    return groups


def trained_token_loss(model, ids, mask, labels, reduction: str = "mean"):
    """Cross-entropy of the trained next tokens (labels not -100). The LM head runs only at the positions where a
    row of the batch has one (transformers' `logits_to_keep`): on the embedded model the head over its 49k-token
    vocabulary is a fifth of the forward, and about half of each row is its prompt."""
    import torch
    from .models import use_cpu_attention
    use_cpu_attention(model, ids.shape[1])
    targets = labels[:, 1:]
    positions = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(1)
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=positions).logits
    if logits.shape[1] != positions.numel():  # a model that ignores a tensor logits_to_keep (Unsloth's) gives all
        logits = logits[:, positions]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                             targets[:, positions].reshape(-1), ignore_index=IGNORE_INDEX,
                                             reduction=reduction)


def mean_loss(model, rows: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """Mean per-token loss over the trained (non -100) labels of `rows`."""
    import torch
    total, count = 0.0, 0
    rows = sorted(rows, key=lambda r: len(r["input_ids"]))  # batches of similar length: half the padding, time
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            ids, mask, labels = (t.to(model.device) for t in pad_batch(rows[start:start + batch_size], pad_id))
            total += trained_token_loss(model, ids, mask, labels, reduction="sum").item()
            count += (labels[:, 1:] != IGNORE_INDEX).sum().item()
    model.train(was_training)
    return total / max(1, count)


AUTOCAST_MIN_SPEEDUP = 1.2  # bf16 autocast only where clearly faster: a close call could flip from run to run


@functools.lru_cache(maxsize=1)
def cpu_autocast_speedup() -> float:
    """How many times faster this CPU runs a forward and backward of one MLP block of the embedded model's shape
    under bf16 autocast than in fp32. CPUs differ more than their features say: 1.7x a training step on 2 AMD EPYC
    cores with AVX-512 bf16 (2026-12-04), 0.69x on 2 Xeon cores with AVX-512 bf16 and no AMX (2026-12-03). The best
    of 5 timings of each, so that another busy process changes little; about a second (two bf16 steps where bf16 is
    emulated: 0.02x on 2 AMD EPYC cores without AVX-512, 2026-12-06)."""
    import time
    import torch
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(384, 576, generator=generator)
    up, down = (torch.randn(shape, generator=generator) * 0.02 for shape in ((1536, 576), (576, 1536)))

    def step(autocast: bool):
        inputs = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = torch.nn.functional.linear(torch.nn.functional.silu(torch.nn.functional.linear(inputs, up)), down)
        out.float().sum().backward()

    def timed(autocast: bool, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            step(autocast)
        return time.perf_counter() - start

    def best_time(autocast: bool) -> float:
        step(autocast)
        return min(timed(autocast, 3) for _ in range(5))
    fp32 = best_time(False)
    step(True)
    one = timed(True, 1)  # bf16 emulated (no AVX-512 bf16) is ~50x slower: one step says so, without 16 more
    return fp32 / (3 * one) if one > fp32 else fp32 / best_time(True)


def cpu_supports_bf16() -> bool:
    """Whether the CPU loop trains under bf16 autocast (fp32 weights, bf16 matrix work): where it measures at least
    AUTOCAST_MIN_SPEEDUP times faster than fp32 on this CPU."""
    return cpu_autocast_speedup() >= AUTOCAST_MIN_SPEEDUP


def inference_dtype(device: str):
    """The dtype to generate in: bf16 on a GPU, and on a CPU where bf16 measured clearly faster (cpu_supports_bf16:
    there a bf16 model generates 1.4-1.6x as fast as fp32, 2 AMD EPYC cores with AVX-512 bf16, 2026-12-07), else
    fp32. Base and tuned are always compared in the same one."""
    import torch
    return torch.bfloat16 if device != "cpu" or cpu_supports_bf16() else torch.float32


def cpu_training_precision(model):
    """bf16 autocast for a model on a CPU that trains under it (cpu_supports_bf16), else nothing: the epoch choice
    measures at the training's speed (3x fp32's on such a CPU), its start and every epoch alike."""
    import torch
    on_cpu = model.device.type == "cpu"
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=on_cpu and cpu_supports_bf16())


def train_cpu(model, rows: list[dict], pad_id: int, s: TrainSettings, *, eval_rows: list[dict] | None = None,
              on_log=None, on_epoch_end=None, bf16: bool | None = None, output_dir=None,
              resume_from=None) -> list[dict]:
    """A plain PyTorch loop over a PEFT model: forward, backward, AdamW, scheduler. Returns the log history.

    With `output_dir`, a checkpoint is written every `s.save_steps` steps; `resume_from` continues one.
    `on_epoch_end(epoch, model)` runs after each whole epoch; the dict it returns joins the history."""
    import torch
    from transformers import get_scheduler
    torch.manual_seed(s.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    device = model.device.type  # "cpu" here; the knowledge sweep (bench/) runs the same loop on "cuda"
    if bf16 is None and device == "cpu":
        bf16 = cpu_supports_bf16()
        say(f"CPU training {'under bf16 autocast' if bf16 else 'in fp32'}: bf16 autocast measured "
            f"{cpu_autocast_speedup():.2f}x fp32's speed on this CPU.")
    elif bf16 is None:
        bf16 = torch.cuda.is_bf16_supported()
    # the test split's loss at the training's precision too: 1.9-3x as fast in bf16 (as the epoch choice's measures)
    precision = functools.partial(torch.autocast, device, dtype=torch.bfloat16, enabled=bf16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(optimizer_groups(model, s), lr=decided_learning_rate(s), weight_decay=s.weight_decay)
    lengths = [len(r["input_ids"]) for r in rows]
    steps = total_steps(lengths, s)
    # one epoch's batch plan, made once per epoch rather than at every step
    batches_of = functools.lru_cache(maxsize=1)(
        lambda epoch: epoch_batches(lengths, batch_size=s.batch_size, batch_tokens=s.batch_tokens, seed=s.seed,
                                    epoch=epoch))
    scheduler = get_scheduler(s.lr_scheduler_type, optimizer, num_warmup_steps=s.warmup_steps,
                              num_training_steps=steps)
    state = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "history": [], "best": None}
    if resume_from:
        state = load_checkpoint(resume_from, model, optimizer, scheduler)
        say(f"Resuming from {resume_from} (step {state['step']} of {steps}).")
    history, start = state["history"], time.time()
    last_log = (start, state["tokens"])  # tokens/s over each logging interval
    model.train()
    bar = tqdm(total=steps, initial=state["step"], desc="Training (CPU)", unit="step")
    while state["step"] < steps:
        step_loss, step_tokens = 0.0, 0
        for _ in range(s.gradient_accumulation_steps):
            order = batches_of(state["epoch"])
            if state["batch"] >= len(order):
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
                order = batches_of(state["epoch"])
            batch = pad_batch([rows[i] for i in order[state["batch"]]], pad_id)
            ids, mask, labels = (t.to(model.device) for t in batch)
            state["batch"] += 1
            with precision():
                loss = trained_token_loss(model, ids, mask, labels)
            (loss / s.gradient_accumulation_steps).backward()
            step_loss += loss.item() / s.gradient_accumulation_steps
            step_tokens += int(mask.sum())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += step_tokens
        step = state["step"]
        if on_epoch_end and state["batch"] >= len(batches_of(state["epoch"])):
            history.append({"step": step, **on_epoch_end(state["epoch"] + 1, model)})
        bar.update()
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if step % s.logging_steps == 0 or step == steps:
            now = time.time()
            entry = {"step": step, "loss": step_loss, "learning_rate": scheduler.get_last_lr()[0],
                     "tokens": state["tokens"], "elapsed_s": now - start,
                     "tokens_per_s": (state["tokens"] - last_log[1]) / max(now - last_log[0], 1e-9)}
            last_log = (now, state["tokens"])
            history.append(entry)
            if on_log:
                on_log(entry)
        if eval_rows and s.eval_steps > 0 and step % s.eval_steps == 0 and step < steps:
            with precision():
                history.append({"step": step, "eval_loss": mean_loss(model, eval_rows, pad_id)})
            if on_log:
                on_log(history[-1])
            if state["best"] is None or history[-1]["eval_loss"] < state["best"][1]:
                state["best"] = (step, history[-1]["eval_loss"])
        if output_dir and s.save_steps > 0 and (step % s.save_steps == 0 or step == steps):
            save_checkpoint(output_dir, model, optimizer, scheduler, state)
            prune_checkpoints(output_dir, s.save_total_limit, state["best"][0] if state["best"] else None)
    bar.close()
    if eval_rows:
        with precision():
            history.append({"step": state["step"], "eval_loss": mean_loss(model, eval_rows, pad_id)})
        if on_log:
            on_log(history[-1])
    return history


def load_model_for_training(model_path: str, s: TrainSettings, device: str):
    """The base model with fresh LoRA layers on it (or INIT_ADAPTER's, trainable), for the chosen path."""
    if device == "cuda":
        from .training_gpu import load_unsloth_model
        model, _ = load_unsloth_model(model_path, s)
        return model
    from peft import PeftModel, get_peft_model
    from .models import load_causal_lm
    if s.init_adapter:
        return PeftModel.from_pretrained(load_causal_lm(model_path), s.init_adapter, is_trainable=True)
    return get_peft_model(load_causal_lm(model_path), lora_config(s))


def train_model(model, tokenizer, rows: list[dict], s: TrainSettings, *, device: str,
                eval_rows: list[dict] | None = None, resume_from=None, on_epoch_end=None) -> list[dict]:
    """Train on the chosen path, with checkpoints in s.output_dir; returns the log history. `on_epoch_end(epoch,
    model)` runs after each epoch (02: common/selection.py's EpochChoice.measure)."""
    start = time.time()
    if device == "cuda":
        from .training_gpu import train_unsloth
        try:
            with tracking_environment(s.output_dir):  # REPORT_TO's trackers log where the CPU loop's do
                history = train_unsloth(model, tokenizer, rows, s, output_dir=s.output_dir, eval_rows=eval_rows,
                                        resume_from=resume_from, on_epoch_end=on_epoch_end)
        except Exception as error:
            if "out of memory" in str(error).lower():
                raise TrainingError("CUDA ran out of memory. Lower BATCH_SIZE (raise GRADIENT_ACCUMULATION_STEPS to "
                                   "keep the effective batch) or MAX_SEQ_LENGTH, set GRADIENT_CHECKPOINTING to "
                                   "unsloth, or set LOAD_IN_4BIT to true.") from error
            raise
    else:
        with cpu_tracker(s) as tracker:  # REPORT_TO; the GPU path reports through the trainer's own callbacks
            history = train_cpu(model, rows, tokenizer.pad_token_id, s, eval_rows=eval_rows,
                                output_dir=s.output_dir, resume_from=resume_from, on_log=tracker.log,
                                on_epoch_end=on_epoch_end)
    history.append({"wall_s": time.time() - start})
    return history


def resume_checkpoint(output_dir, resume: bool, identity: dict | None = None) -> Path | None:
    """The checkpoint to continue from: the latest one in OUTPUT_DIR when RESUME is on and it was trained with the
    same settings and rows (`identity`, checkpoints.run_identity), else none: cleared (--no-resume) or set aside
    (other settings or data: the user changed the constants and ran 02 again). Records `identity` for the next run."""
    with main_process_first():  # the main process clears or sets aside first; the others then find what it left
        latest = latest_checkpoint(output_dir)
        if latest and not resume:
            if is_main_process():
                shutil.rmtree(Path(output_dir) / "checkpoints", ignore_errors=True)
            say(f"Starting over: removed the old checkpoints in {output_dir} (--no-resume).")
            latest = None
        changes = identity_changes(saved_identity(output_dir), identity) if latest and identity else []
        if changes and is_main_process():
            aside = set_aside_checkpoints(output_dir)
            say(f"Starting over: the checkpoints in {output_dir} were trained with other settings or data "
                f"({'; '.join(changes[:5])}{'; ...' if len(changes) > 5 else ''}). They are kept in {aside}: move "
                f"it back to {Path(output_dir) / 'checkpoints'} and put those settings back to resume that run.")
            latest = None
        elif latest:
            say(f"Found {latest}: resuming from it (pass --no-resume to start over).")
        if identity and is_main_process():
            save_identity(output_dir, identity)
        return latest

"""Tokenize with the prompt masked, check the result, and train a LoRA adapter.

Two paths, same data, same formatting, same adapter format:
- CUDA + Unsloth: FastLanguageModel (QLoRA or 16-bit LoRA), gradient checkpointing "unsloth", TRL SFTTrainer.
- CPU: transformers + PEFT in a plain PyTorch loop (TRL on the CPU was measured ~100x slower).
"""
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from tqdm import tqdm

from .batching import batches_per_epoch, epoch_batches
from .checkpoints import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .distributed import is_main_process, main_process_only, world_size
from .prompts import format_example

IGNORE_INDEX = -100


class FormattingError(ValueError):
    """Tokenized rows that would train the wrong thing (no EOS, all labels masked, pad == EOS...)."""


@dataclass
class TokenizedData:
    rows: list  # [{"input_ids": [...], "labels": [...]}]
    n_truncated: int = 0
    longest: int = 0


def tokenize_rows(records, tokenizer, prompt_format, max_seq_length, responses_only=True):
    """input_ids and labels of each record; the prompt's labels are -100 when `responses_only`."""
    rows, n_truncated, longest = [], 0, 0
    for record in records:
        prompt, completion = format_example(tokenizer, prompt_format, record["instruction"],
                                            record.get("input", ""), record["output"])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + completion_ids
        labels = ([IGNORE_INDEX] * len(prompt_ids) if responses_only else list(prompt_ids)) + completion_ids
        longest = max(longest, len(ids))
        if len(ids) > max_seq_length:
            n_truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        rows.append({"input_ids": ids, "labels": labels})
    return TokenizedData(rows, n_truncated, longest)


def tokenize_cached(records, tokenizer, prompt_format, max_seq_length, responses_only, cache_file):
    """tokenize_rows, once: under several processes the main one tokenizes (see distributed.main_process_first)
    and keeps the rows in `cache_file`, and the others read them from there."""
    if world_size() == 1:
        return tokenize_rows(records, tokenizer, prompt_format, max_seq_length, responses_only)
    import hashlib
    texts = [[r["instruction"], r.get("input", ""), r["output"]] for r in records]
    key = hashlib.sha256(json.dumps([texts, tokenizer.name_or_path, len(tokenizer), tokenizer.eos_token,
                                     prompt_format, max_seq_length, responses_only]).encode()).hexdigest()
    cache_file = Path(cache_file)
    if cache_file.exists():
        cached = json.loads(cache_file.read_text())
        if cached["key"] == key:
            return TokenizedData(cached["rows"], cached["n_truncated"], cached["longest"])
    data = tokenize_rows(records, tokenizer, prompt_format, max_seq_length, responses_only)
    if is_main_process():
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "rows": data.rows, "n_truncated": data.n_truncated,
                                   "longest": data.longest}))
        os.replace(tmp, cache_file)
    return data


def check_tokenized(data, tokenizer, n_sample=32):
    """Stop before training when the formatting would silently train the wrong thing."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if data.n_truncated:
        print(f"Warning: {data.n_truncated} of {len(data.rows)} rows are longer than MAX_SEQ_LENGTH and were cut "
              f"(longest: {data.longest} tokens). Raise MAX_SEQ_LENGTH, or lower CHUNK_TOKENS in step 01.")
    if pad is None or pad == eos:
        raise FormattingError(f"The pad token ({tokenizer.pad_token!r}) is the EOS token ({tokenizer.eos_token!r}): "
                              "the model would not learn to stop. Set a distinct pad token.")
    for i, row in enumerate(data.rows[:n_sample]):
        trained = [t for t in row["labels"] if t != IGNORE_INDEX]
        if not trained:
            raise FormattingError(f"Row {i} has every label masked (-100): nothing would be learned. "
                                  "The prompt/response split is wrong, or MAX_SEQ_LENGTH cuts off the response.")
        if eos not in trained:
            raise FormattingError(f"Row {i}'s response does not end with EOS ({tokenizer.eos_token!r}): "
                                  "the tuned model would not stop. Check the prompt format and the tokenizer's EOS.")


@dataclass
class TrainSettings:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"])
    use_rslora: bool = False
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    lr_scheduler_type: str = "linear"
    batch_size: int = 8
    batch_tokens: int = 0
    offload_embedding: bool = False
    gradient_accumulation_steps: int = 1
    num_epochs: float = 1.0
    max_steps: int = -1
    max_seq_length: int = 1024
    logging_steps: int = 1
    eval_steps: int = 0
    save_steps: int = 0
    save_total_limit: int = 2
    seed: int = 42

    @classmethod
    def from_constants(cls, constants):
        """From a script's constants (LORA_R -> lora_r ...); constants it does not know are ignored."""
        return cls(**{f.name: constants[f.name.upper()] for f in fields(cls) if f.name.upper() in constants})


def total_steps(lengths, s):
    """Optimizer steps of a run over rows of these lengths (MAX_STEPS, else NUM_EPOCHS passes)."""
    if s.max_steps and s.max_steps > 0:
        return s.max_steps
    batches = batches_per_epoch(lengths, s.batch_size, s.batch_tokens)
    return max(1, math.ceil(math.ceil(batches / s.gradient_accumulation_steps) * s.num_epochs))


def lora_config(s):
    from peft import LoraConfig
    return LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                      target_modules=list(s.target_modules), use_rslora=s.use_rslora, bias="none",
                      task_type="CAUSAL_LM")


def pad_batch(rows, pad_id):
    """Right-padded tensors (input_ids, attention_mask, labels) for a list of tokenized rows."""
    import torch
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return ids, mask, labels


def mean_loss(model, rows, pad_id, batch_size=8):
    """Mean per-token loss over the trained (non -100) labels of `rows`."""
    import torch
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            ids, mask, labels = pad_batch(rows[start:start + batch_size], pad_id)
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
            shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:].to(model.device)
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                     shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                                                     reduction="sum")
            total += loss.item()
            count += (shift_labels != IGNORE_INDEX).sum().item()
    model.train()
    return total / max(1, count)


def cpu_supports_bf16():
    """True where the CPU has native bf16 matrix instructions (autocast then trains ~1.7x faster)."""
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_cpu(model, rows, pad_id, s, eval_rows=None, on_log=None, bf16=None, output_dir=None, resume_from=None):
    """A plain PyTorch loop over a PEFT model: forward, backward, AdamW, scheduler. Returns the log history.

    With `output_dir`, a checkpoint is written every `s.save_steps` steps; `resume_from` continues one."""
    import torch
    from transformers import get_scheduler
    torch.manual_seed(s.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    bf16 = cpu_supports_bf16() if bf16 is None else bf16
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=s.weight_decay)
    lengths = [len(r["input_ids"]) for r in rows]
    steps = total_steps(lengths, s)
    # one epoch's batch plan, made once per epoch rather than at every step
    batches_of = functools.lru_cache(maxsize=1)(
        lambda epoch: epoch_batches(lengths, s.batch_size, s.batch_tokens, s.seed, epoch))
    scheduler = get_scheduler(s.lr_scheduler_type, optimizer, num_warmup_steps=s.warmup_steps,
                              num_training_steps=steps)
    state = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "history": [], "best": None}
    if resume_from:
        state = load_checkpoint(resume_from, model, optimizer, scheduler)
        print(f"Resuming from {resume_from} (step {state['step']} of {steps}).")
    history, start = state["history"], time.time()
    model.train()
    bar = tqdm(total=steps, initial=state["step"], desc="Training (CPU)", unit="step")
    while state["step"] < steps:
        step_loss, step_tokens = 0.0, 0
        for _ in range(s.gradient_accumulation_steps):
            order = batches_of(state["epoch"])
            if state["batch"] >= len(order):
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
                order = batches_of(state["epoch"])
            ids, mask, labels = pad_batch([rows[i] for i in order[state["batch"]]], pad_id)
            state["batch"] += 1
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
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
        bar.update()
        bar.set_postfix(loss=f"{step_loss:.3f}")
        if step % s.logging_steps == 0 or step == steps:
            entry = {"step": step, "loss": step_loss, "learning_rate": scheduler.get_last_lr()[0],
                     "tokens": state["tokens"], "elapsed_s": time.time() - start}
            history.append(entry)
            if on_log:
                on_log(entry)
        if eval_rows and s.eval_steps > 0 and step % s.eval_steps == 0 and step < steps:
            history.append({"step": step, "eval_loss": mean_loss(model, eval_rows, pad_id)})
            if state["best"] is None or history[-1]["eval_loss"] < state["best"][1]:
                state["best"] = (step, history[-1]["eval_loss"])
        if output_dir and s.save_steps > 0 and (step % s.save_steps == 0 or step == steps):
            save_checkpoint(output_dir, model, optimizer, scheduler, state)
            prune_checkpoints(output_dir, s.save_total_limit, state["best"][0] if state["best"] else None)
    bar.close()
    if eval_rows:
        history.append({"step": state["step"], "eval_loss": mean_loss(model, eval_rows, pad_id)})
    return history


@main_process_only
def save_adapter(model, tokenizer, output_dir, settings, history):
    """PEFT adapter + tokenizer + the exact settings used, loadable by plain PeftModel.from_pretrained."""
    adapter_dir = Path(output_dir) / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    (adapter_dir / "training_config.json").write_text(json.dumps(settings, indent=2, default=str))
    (Path(output_dir) / "history.json").write_text(json.dumps(history, indent=2))
    return adapter_dir


def choose_device(requested="auto"):
    """'cuda' (Unsloth) or 'cpu', printing which path runs and why."""
    from .training_gpu import unsloth_available
    if requested == "cpu":
        print("Using the CPU (transformers + PEFT), as asked.")
        return "cpu"
    ok, why = unsloth_available()
    if ok:
        print("Using the GPU with Unsloth.")
        return "cuda"
    if requested == "cuda":
        raise RuntimeError(f"--device cuda was asked for, but {why}. Install the GPU requirements "
                           "(pip install -r requirements-gpu.txt) on a machine with an NVIDIA GPU.")
    print(f"Using the CPU (transformers + PEFT), since {why}.")
    return "cpu"


def load_model_for_training(model_path, s, device, load_in_4bit=True):
    """The base model with fresh LoRA layers on it, for the chosen path."""
    if device == "cuda":
        from .training_gpu import load_unsloth_model
        model, _ = load_unsloth_model(model_path, s, load_in_4bit=load_in_4bit)
        return model
    from peft import get_peft_model
    from .models import load_causal_lm
    return get_peft_model(load_causal_lm(model_path), lora_config(s))


def train_model(model, tokenizer, rows, s, device, output_dir, eval_rows=None, resume_from=None):
    start = time.time()
    if device == "cuda":
        from .training_gpu import train_unsloth
        try:
            history = train_unsloth(model, tokenizer, rows, s, output_dir, eval_rows=eval_rows,
                                    resume_from=resume_from)
        except Exception as error:
            if "out of memory" in str(error).lower():
                raise RuntimeError("CUDA ran out of memory. Lower BATCH_SIZE (raise GRADIENT_ACCUMULATION_STEPS to "
                                   "keep the effective batch) or MAX_SEQ_LENGTH, or keep LOAD_IN_4BIT on.") from error
            raise
    else:
        history = train_cpu(model, rows, tokenizer.pad_token_id, s, eval_rows=eval_rows, output_dir=output_dir,
                            resume_from=resume_from)
    history.append({"wall_s": time.time() - start})
    return history


def resume_checkpoint(output_dir, resume):
    """The checkpoint to continue from: the latest one in OUTPUT_DIR when RESUME is on, else none (cleared)."""
    latest = latest_checkpoint(output_dir)
    if latest and not resume:
        import shutil
        if is_main_process():
            shutil.rmtree(Path(output_dir) / "checkpoints", ignore_errors=True)
        print(f"Starting over: removed the old checkpoints in {output_dir} (--no-resume).")
        return None
    if latest:
        print(f"Found {latest}: resuming from it (pass --no-resume to start over).")
    return latest


def check_dataset_tokenizer(dataset_dir, tokenizer):
    """Stop when step 01 measured the chunks with another tokenizer than the model's (same vocab is fine)."""
    meta_path = Path(dataset_dir) / "pipeline.json"
    built_for = json.loads(meta_path.read_text()).get("tokenizer") if meta_path.exists() else None
    if not built_for:
        return
    from .models import ModelError, load_tokenizer, resolve_model_path
    try:
        other = load_tokenizer(resolve_model_path(built_for))
    except (ModelError, OSError):
        print(f"Warning: cannot check the tokenizer '{built_for}' that the dataset was built with.")
        return
    if other.get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"The dataset in {dataset_dir} was built with the tokenizer of '{built_for}', which is not "
                         f"this model's: its chunk sizes are wrong for it. Rebuild it with "
                         f"`01_create_dataset.py --model-name <this model>`, or train '{built_for}'.")


def check_output_space(output_dir, model_path, s):
    """Stop before training when the disk cannot hold the checkpoints (adapter + optimizer state, x limit)."""
    import shutil
    config = json.loads((Path(model_path) / "config.json").read_text()) if (Path(model_path) / "config.json").exists() \
        else {}
    hidden, layers = config.get("hidden_size", 4096), config.get("num_hidden_layers", 32)
    inter = config.get("intermediate_size", 4 * hidden)
    lora_params = layers * s.lora_r * (4 * 2 * hidden + 3 * (hidden + inter))
    need = lora_params * 4 * 3 * (max(1, s.save_total_limit) + 2)  # fp32 weights + Adam moments, per copy
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(output_dir).free
    if free < need:
        raise OSError(f"Not enough disk space in {output_dir}: {free / 2**20:.0f} MiB free, about "
                      f"{need / 2**20:.0f} MiB needed for the adapter and checkpoints. Free some space, choose "
                      f"another --output-dir, or lower SAVE_TOTAL_LIMIT.")
    return need


def effective_batch(s, processes=1):
    """Rows per optimizer step (with BATCH_TOKENS: padded tokens at most): per device x accumulation x processes."""
    per_device, unit = (s.batch_tokens, "padded tokens per step, at most") if s.batch_tokens > 0 \
        else (s.batch_size, "rows per step")
    key = f"effective batch ({unit})"
    return {key: f"{per_device * s.gradient_accumulation_steps * processes} = {per_device} per device x "
                 f"{s.gradient_accumulation_steps} accumulated x {processes} process(es)"}


def run_summary(train, test, history, device, s, processes=1):
    """The numbers a person wants from a run: counts, batch, losses, tokens, speed, memory."""
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = max([h.get("tokens", 0) for h in history] or [0])
    wall = sum(h.get("wall_s", 0) for h in history)
    facts = {"device": device, "train rows": len(train.rows), "test rows": len(test.rows),
             "rows cut at MAX_SEQ_LENGTH": train.n_truncated + test.n_truncated,
             "longest row (tokens)": max(train.longest, test.longest),
             **effective_batch(s, processes),
             "optimizer steps": max([h.get("step", 0) for h in history] or [0]),
             "first train loss": losses[0] if losses else None, "last train loss": losses[-1] if losses else None,
             "eval loss (test split)": evals[-1] if evals else None, "wall time (s)": wall}
    if tokens:
        facts.update({"tokens seen": tokens, "tokens/s": tokens / wall if wall else None})
    peak = [h["peak_gpu_memory_gib"] for h in history if "peak_gpu_memory_gib" in h]
    if peak:
        facts["peak GPU memory (GiB)"] = peak[-1]
    else:
        import resource
        facts["peak memory (GiB, process)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return facts

"""The CUDA path: Unsloth FastLanguageModel + TRL SFTTrainer on the same tokenized rows as the CPU path.

Batching (`train_unsloth(..., batching=)`, one of BATCHINGS; None: "tokens" when BATCH_TOKENS is set, else "grouped"):
- "grouped": padded batches of BATCH_SIZE rows of similar length (LengthGroupedSampler), which run Unsloth's compiled
  decoder blocks and carry few pad tokens;
- "tokens": padded batches of rows of similar length (TokenBudgetBatchSampler): by default (BATCH_TOKENS -1) as many
  batches as BATCH_SIZE rows make, each of about the same padded tokens; with BATCH_TOKENS > 0, as many rows as fit
  in that many;
- "packed": the batches of "tokens", each flattened into one row (TRL padding_free) whose rows attend through
  torch's FlashAttention-2 varlen kernel (`use_torch_varlen_attention`): no pad tokens, no compiled blocks;
- "padded": padded batches in random order;
- "padding_free": BATCH_SIZE rows in random order, flattened as "packed" is.

Gradient checkpointing (GRADIENT_CHECKPOINTING, common/gpu_memory.py): "auto" loads the model with Unsloth's, then
`train_unsloth` turns it off where the largest batch's activations fit in the free GPU memory, and on again if
that run runs out of memory.

Nothing here imports unsloth, transformers or trl at import time: Unsloth must be imported before them to patch
them, so the trainer and callback classes are put together (`on_base`) from the mixins below and the classes TRL
and transformers have once Unsloth has patched them.
"""
import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .batching import LengthGroupedSampler, TokenBudgetBatchSampler, largest_batch_tokens
from .checkpoints import latest_checkpoint
from .cpt import embedding_learning_rate
from .distributed import local_rank, say, world_size
from .errors import SettingsError
from .gpu_memory import (UNSLOTH_VALUES, activation_bytes, choose_gradient_checkpointing, loaded_checkpointing,
                         train_or_fall_back, uses_4bit)
from .settings import TrainSettings, decided_learning_rate
from .tracking import PROJECT, report_targets

BATCHINGS = ("grouped", "packed", "padded", "padding_free", "tokens")
PACKED = ("packed", "padding_free")  # batchings whose batches are flattened into one row
PAD_TO_MULTIPLE_OF = 64  # padded batches' lengths: few distinct shapes, so the compiled blocks rarely recompile


def load_unsloth_model(model_path: str | Path, settings: TrainSettings, *,
                       use_gradient_checkpointing: str | bool | None = None) -> tuple[Any, Any]:
    """(model, tokenizer): the base model (4-bit QLoRA where settings.load_in_4bit is "true", else 16-bit) with LoRA on
    settings.target_modules, via Unsloth. settings.offload_embedding: keep the input embedding in CPU memory (else
    Unsloth moves it only when memory is tight). Gradient checkpointing: settings.gradient_checkpointing's, Unsloth's
    for "auto" (train_unsloth may turn it off), unless `use_gradient_checkpointing` says otherwise."""
    from unsloth import FastLanguageModel
    if use_gradient_checkpointing is None:
        use_gradient_checkpointing = loaded_checkpointing(settings.gradient_checkpointing)
    options = {"device_map": {"": local_rank()}} if world_size() > 1 else {}  # one GPU per process
    if settings.offload_embedding:
        options["offload_embedding"] = True
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_path, max_seq_length=settings.max_seq_length,
                                                         load_in_4bit=uses_4bit(settings.load_in_4bit), dtype=None,
                                                         **options)
    if settings.init_adapter:  # an earlier adapter trains on (e.g. cpt, then sft), loaded as Unsloth loads one
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, settings.init_adapter, is_trainable=True)
        return FastLanguageModel.patch_peft_model(model, use_gradient_checkpointing), tokenizer
    model = FastLanguageModel.get_peft_model(model, r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                             lora_dropout=settings.lora_dropout,
                                             target_modules=list(settings.target_modules), bias="none",
                                             use_gradient_checkpointing=use_gradient_checkpointing,
                                             random_state=settings.seed, use_rslora=settings.use_rslora)
    return model, tokenizer


def choose_batching(batching: Optional[str], settings: TrainSettings) -> str:
    """The batching a run uses: `batching` as asked, or by default "tokens" when BATCH_TOKENS is set (-1: auto, or
    a budget), else "grouped"."""
    if batching is None:
        return "tokens" if settings.batch_tokens else "grouped"
    if batching not in BATCHINGS:
        raise SettingsError(f"batching must be one of {', '.join(BATCHINGS)} (or None: \"tokens\" when "
                            f"BATCH_TOKENS is set, else \"grouped\"), not {batching!r}.")
    if batching in ("tokens", "packed") and not settings.batch_tokens:
        raise SettingsError(f"batching={batching!r} needs BATCH_TOKENS (--batch-tokens): -1 (auto) or the padded "
                            "tokens a batch may hold, e.g. 16384; or leave batching at None.")
    return batching


# ----------------------------------------------------------------------------------------------- trainer parts

def on_base(mixin: type, base: type, name: str) -> type:
    """The class `name`: `mixin` over `base` (a TRL / transformers class, taken once Unsloth has patched it)."""
    return type(name, (mixin, base), {})


def row_lengths(dataset) -> list[int]:
    return [len(ids) for ids in dataset["input_ids"]]


class LengthGroupedSampling:
    """SFTTrainer mixin: padded batches of rows of similar length, in LengthGroupedSampler's order."""

    def _get_train_sampler(self, train_dataset=None, *args, **kwargs):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(row_lengths(dataset), self.args.per_device_train_batch_size, seed=self.args.seed)


class TokenBudgetBatching:
    """SFTTrainer mixin: batches of rows of similar length, as many as fit in `batch_tokens` padded tokens (padded
    to a multiple of `pad_to_multiple_of`). The Trainer's loader with our batch_sampler; accelerate gives each
    process every n-th batch, and the Trainer's set_epoch reaches the sampler (transformers 5.17), also on resume."""

    def __init__(self, *args, batch_tokens: int, pad_to_multiple_of: Optional[int], **kwargs):
        self.token_budget, self.budget_multiple = batch_tokens, pad_to_multiple_of or 1
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self):
        from torch.utils.data import DataLoader
        dataset = self._remove_unused_columns(self.train_dataset, description="training")
        sampler = TokenBudgetBatchSampler(row_lengths(dataset), self.token_budget, seed=self.args.seed,
                                          multiple=self.budget_multiple,
                                          batch_size=self.args.per_device_train_batch_size)
        return self.accelerator.prepare(DataLoader(
            dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory))


def trainer_class_for(batching: str, sft_trainer: type, settings: TrainSettings,
                      pad_to_multiple_of: Optional[int]) -> tuple[type, dict]:
    """(the trainer class, the extra arguments it takes) of a batching; "padded" and "padding_free" are TRL's own."""
    if batching == "grouped":
        return on_base(LengthGroupedSampling, sft_trainer, "GroupedSFTTrainer"), {}
    if batching in ("tokens", "packed"):
        return (on_base(TokenBudgetBatching, sft_trainer, "TokenBudgetSFTTrainer"),
                {"batch_tokens": settings.batch_tokens, "pad_to_multiple_of": pad_to_multiple_of})
    return sft_trainer, {}


class TokenCounter:
    """Non-padding tokens of each training forward: Unsloth's trainer logs no token count (TRL's num_tokens).
    Hooked on the PEFT wrapper and on the base model, counted once per forward at the outermost one reached; the
    count is summed on the GPU (no host sync before each forward) and read at logs."""

    def __init__(self, pad_token_id: Optional[int]):
        import torch
        self.pad_token_id, self.tokens, self.depth, self.grad_enabled = pad_token_id, 0, 0, torch.is_grad_enabled

    def before_forward(self, module, args, kwargs) -> None:
        self.depth += 1
        if self.depth > 1 or not (module.training and self.grad_enabled()):
            return
        mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids", args[0] if args else None)
        if mask is not None:
            self.tokens = self.tokens + mask.sum()
        elif ids is not None:  # padding-free: one flattened row
            self.tokens = self.tokens + (ids != self.pad_token_id).sum()

    def after_forward(self, module, args, kwargs, output) -> None:
        self.depth -= 1

    def count(self) -> int:
        return int(self.tokens)

    @contextlib.contextmanager
    def hooked(self, model):
        """Count the forwards of `model` (and of its base model) inside the block."""
        hooks = []
        for module in {id(m): m for m in (model, model.get_base_model())}.values():
            hooks += [module.register_forward_pre_hook(self.before_forward, with_kwargs=True),
                      module.register_forward_hook(self.after_forward, with_kwargs=True, always_call=True)]
        try:
            yield self
        finally:
            for hook in hooks:
                hook.remove()


class HistoryLogging:
    """TrainerCallback mixin: each log as a history entry (numbers only; "tokens" with the loss; "elapsed_s" since
    the callback was made), appended to `history` and passed to `on_log`."""

    def __init__(self, history: list, counter: TokenCounter, on_log: Optional[Callable[[dict], Any]]):
        self.history, self.counter, self.on_log_entry, self.start = history, counter, on_log, time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            if "loss" in entry:
                entry["tokens"] = self.counter.count()
            entry["elapsed_s"] = time.time() - self.start
            self.history.append(entry)
            if self.on_log_entry:
                self.on_log_entry(entry)


class EpochEnd:
    """TrainerCallback mixin: `measure(epoch, model)` after each epoch, the entry it returns joining `history`
    (02's choice of the epoch to keep, common/selection.py)."""

    def __init__(self, history: list, measure: Callable[[int, Any], dict]):
        self.history, self.measure = history, measure

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.history.append({"step": state.global_step, **self.measure(round(state.epoch), model)})


def trainer_recipe(settings: TrainSettings) -> tuple[type, type, dict]:
    """(trainer class, its config class, extra config arguments): TRL's SFTTrainer and SFTConfig; for cpt, and
    wherever embed_tokens / lm_head are trained, Unsloth's continued-pretraining recipe: UnslothTrainer and
    UnslothTrainingArguments (SFTConfig's subclass) with their own learning rate for those two."""
    embedding_lr = embedding_learning_rate(settings)
    if settings.training_mode != "cpt" and embedding_lr is None:
        from trl import SFTConfig, SFTTrainer
        return SFTTrainer, SFTConfig, {}
    from unsloth import UnslothTrainer, UnslothTrainingArguments
    return UnslothTrainer, UnslothTrainingArguments, {"embedding_learning_rate": embedding_lr}


def sft_config(settings: TrainSettings, *, output_dir, batching: str, evaluating: bool,
               pad_to_multiple_of: Optional[int], config_class: Optional[type] = None, **extra):
    """TRL's SFTConfig (or `config_class`, with `extra`) of a run: checkpoints in
    <output_dir>/checkpoints/checkpoint-<step>, as on the CPU path."""
    import torch
    from trl import SFTConfig
    s, padding_free, bf16 = settings, batching in PACKED, torch.cuda.is_bf16_supported()
    evaluating = evaluating and s.eval_steps > 0
    return (config_class or SFTConfig)(
        output_dir=str(Path(output_dir) / "checkpoints"), per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps, learning_rate=decided_learning_rate(s),
        weight_decay=s.weight_decay, warmup_steps=s.warmup_steps, lr_scheduler_type=s.lr_scheduler_type,
        num_train_epochs=s.num_epochs, max_steps=s.max_steps if s.max_steps and s.max_steps > 0 else -1,
        logging_steps=s.logging_steps, seed=s.seed, optim="adamw_8bit", bf16=bf16, fp16=not bf16,
        # The rows are already cut at MAX_SEQ_LENGTH by tokenize_rows. TRL >= 1.0 refuses padding_free together
        # with a max_length it cannot enforce on pre-tokenized rows, so max_length is only set without padding_free.
        max_length=None if padding_free else s.max_seq_length, padding_free=padding_free,
        pad_to_multiple_of=None if padding_free else pad_to_multiple_of,
        report_to=report_targets(s.report_to), run_name=Path(output_dir).name, project=PROJECT, dataset_num_proc=1,
        save_strategy="steps" if s.save_steps > 0 else "no", save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        eval_strategy="steps" if evaluating else "no", eval_steps=s.eval_steps or None,
        metric_for_best_model="eval_loss" if evaluating else None, **extra,
    )


# ----------------------------------------------------------------------------------------------- training

def train_unsloth(model, tokenizer, rows: list[dict], settings: TrainSettings, *, output_dir: str | Path,
                  eval_rows: Optional[list[dict]] = None, on_log: Optional[Callable[[dict], Any]] = None,
                  batching: Optional[str] = None, resume_from: Optional[str | Path] = None,
                  pad_to_multiple_of: Optional[int] = PAD_TO_MULTIPLE_OF,
                  on_epoch_end: Optional[Callable[[int, Any], dict]] = None) -> list[dict]:
    """TRL SFTTrainer on pre-tokenized rows (input_ids + labels: the prompt is already masked); the history of
    logs, then one entry with train_wall_s and peak_gpu_memory_gib.

    batching: see the module's docstring (None: "tokens" when settings.batch_tokens is set, else "grouped").
    pad_to_multiple_of: padded batches are padded to a multiple of this many tokens (None: to their longest row);
    few distinct batch shapes keep the compiled blocks from recompiling for new lengths.
    Gradient checkpointing: settings.gradient_checkpointing, "auto" decided here (common/gpu_memory.py)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    batching = choose_batching(batching, settings)
    if batching == "packed":
        use_torch_varlen_attention()
    history, counter = [], TokenCounter(tokenizer.pad_token_id)
    callbacks = [on_base(HistoryLogging, TrainerCallback, "HistoryCallback")(history, counter, on_log)]
    if on_epoch_end:
        callbacks.append(on_base(EpochEnd, TrainerCallback, "EpochCallback")(history, on_epoch_end))
    base_trainer, config_class, recipe = trainer_recipe(settings)
    trainer_class, extra = trainer_class_for(batching, base_trainer, settings, pad_to_multiple_of)
    datasets = {"train_dataset": Dataset.from_list(rows),
                "eval_dataset": Dataset.from_list(eval_rows) if eval_rows else None}
    activations = batch_activations(model, [len(r["input_ids"]) for r in rows], settings, batching=batching,
                                    multiple=pad_to_multiple_of)
    checkpointing, why = choose_gradient_checkpointing(settings.gradient_checkpointing, activations=activations,
                                                       free=free_gpu_memory())

    def attempt(mode: str):
        """One trainer.train() with gradient checkpointing `mode`, from a clean slate: (trainer, wall time)."""
        release_gpu_memory(model)
        history.clear()
        counter.tokens = 0
        set_gradient_checkpointing(model, mode)
        off = {"gradient_checkpointing": False} if mode == "false" else {}  # else TRL's default: on
        config = sft_config(settings, output_dir=output_dir, batching=batching, evaluating=bool(eval_rows),
                            pad_to_multiple_of=pad_to_multiple_of, config_class=config_class, **recipe, **off)
        trainer = trainer_class(model=model, processing_class=tokenizer, args=config, callbacks=callbacks,
                                **datasets, **extra)
        log_flops_utilisation(trainer)
        start_from = resume_from if mode == checkpointing else latest_checkpoint(output_dir) or resume_from
        say(f"GPU training: gradient checkpointing {mode} ({why})")
        with counter.hooked(model):
            torch.cuda.reset_peak_memory_stats()
            train_start = time.time()
            trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        return trainer, time.time() - train_start

    fallback = "unsloth" if settings.gradient_checkpointing == "auto" and checkpointing == "false" \
        and world_size() == 1 else None  # several processes must stay in step: no second try
    (trainer, train_wall), ran = train_or_fall_back(attempt, checkpointing, fallback=fallback)
    if ran != checkpointing:
        why += "; out of GPU memory without it all the same, so on again"
    if eval_rows:
        trainer.evaluate()  # logged through the callback as eval_loss
    report_run(history, batching=batching, steps=trainer.state.global_step, tokens=counter.count(),
               train_wall=train_wall, checkpointing=f"{ran} ({why})")
    return history


def report_run(history: list, *, batching: str, steps: int, tokens: int, train_wall: float,
               checkpointing: str) -> None:
    """The run's last history entry (wall time of trainer.train(), peak GPU memory, the gradient checkpointing that
    ran and why) and its one-line summary."""
    import torch
    peak = torch.cuda.max_memory_allocated() / 2**30
    history.append({"step": steps, "train_wall_s": train_wall, "peak_gpu_memory_gib": peak,
                    "gradient_checkpointing": checkpointing})
    say(f"GPU training ({batching} batches): {steps} steps, {tokens} tokens in {train_wall:.1f} s "
        f"({tokens / train_wall if train_wall else 0:.0f} tokens/s in trainer.train()), peak GPU memory {peak:.2f} GiB"
        f", gradient checkpointing {checkpointing}")


# ----------------------------------------------------------------------------------------------- memory and FLOPs

def batch_activations(model, lengths: list[int], settings: TrainSettings, *, batching: str,
                      multiple: Optional[int]) -> int:
    """Bytes the activations of the run's largest batch take without checkpointing (gpu_memory.activation_bytes)."""
    config = model.config
    by_tokens = batching in ("tokens", "packed")
    tokens = largest_batch_tokens(lengths, batch_size=settings.batch_size,
                                  batch_tokens=settings.batch_tokens if by_tokens else 0, multiple=multiple or 1)
    return activation_bytes(tokens=tokens, layers=config.num_hidden_layers, hidden=config.hidden_size,
                            intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size))


def release_gpu_memory(model=None) -> None:
    """Give back what a finished or failed try left: gradients, unreferenced tensors, the allocator's cache."""
    import gc
    import torch
    for parameter in model.parameters() if model is not None else []:
        parameter.grad = None
    gc.collect()
    torch.cuda.empty_cache()


def free_gpu_memory() -> int:
    import torch
    release_gpu_memory()
    return torch.cuda.mem_get_info()[0]


def set_gradient_checkpointing(model, mode: str) -> None:
    """Gradient checkpointing `mode` ("unsloth", "true", "false") on the model, where Unsloth's trainer reads it
    again at each train(): the mode recorded at load (model._unsloth_gradient_checkpointing) and the layers."""
    from unsloth import FastLanguageModel
    model._unsloth_gradient_checkpointing = UNSLOTH_VALUES[mode]
    FastLanguageModel.for_training(model, use_gradient_checkpointing=UNSLOTH_VALUES[mode])


def log_flops_utilisation(trainer) -> None:
    """Unsloth's FLOPs callback: each log gets train_mfu (model FLOPs: 4N a token for the frozen base, 6 x the LoRA
    weights, attention) and train_hfu (with the recomputation of checkpointing) against the card's dense 16-bit
    peak (H100 / H200: 989 TFLOP/s)."""
    try:
        from unsloth.utils.mfu import add_mfu_callback
    except ImportError:  # another Unsloth: no utilisation in the report
        return
    add_mfu_callback(trainer)


def use_torch_varlen_attention() -> bool:
    """Packed rows attend through torch's FlashAttention-2 varlen kernel (torch.nn.attention.varlen) rather than
    one SDPA call per run of equal row lengths. Unsloth takes that kernel from torch 2.12 on (it asks varlen_attn for
    enable_gqa); torch 2.11's is the same flash kernel, so it is handed to Unsloth's dispatcher, which then calls
    the flash kernels directly (GQA included) outside compiled code. True where packed rows take it."""
    import inspect
    try:
        from torch.nn.attention.varlen import varlen_attn
        from unsloth.utils import attention_dispatch as dispatch
    except ImportError:
        return False
    if dispatch._TORCH_VARLEN_ATTN is not None:
        return True
    takes = inspect.signature(varlen_attn).parameters

    def torch_varlen(query, key, value, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
                     enable_gqa=False):
        if key.shape[1] != query.shape[1]:  # (tokens, heads, head_dim): GQA by repeating the key/value heads
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        options = {"scale": scale} if "scale" in takes else {}
        options.update({"window_size": tuple(window_size)} if "window_size" in takes
                       else {"is_causal": tuple(window_size) == (-1, 0)})
        return varlen_attn(query, key, value, cu_q, cu_k, max_q, max_k, **options)

    dispatch._TORCH_VARLEN_ATTN, dispatch._LEAN_VARLEN = torch_varlen, True
    dispatch._varlen_can_use_cudnn = lambda *args, **kwargs: False
    return True

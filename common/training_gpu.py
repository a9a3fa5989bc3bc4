"""The CUDA path: Unsloth FastLanguageModel + TRL SFTTrainer on the same tokenized rows as the CPU path.

Batching (`train_unsloth(..., batching=)`, one of BATCHINGS; None: "tokens" when BATCH_TOKENS > 0, else "grouped"):
- "grouped": padded batches of rows of similar length (LengthGroupedSampler), which run Unsloth's compiled decoder
  blocks and carry few pad tokens;
- "tokens": rows of similar length, as many as fit in BATCH_TOKENS padded tokens (TokenBudgetBatchSampler), so
  short rows no longer make light steps;
- "padded": padded batches in random order;
- "padding_free": each batch flattened into one row (TRL padding_free): no pad tokens but, on this stack, no compiled
  blocks and one attention call per distinct row length (see bench/README.md).

Nothing here imports unsloth, transformers or trl at import time: Unsloth must be imported before them to patch
them, so the trainer and callback classes are put together (`on_base`) from the mixins below and the classes TRL
and transformers have once Unsloth has patched them.
"""
import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .batching import LengthGroupedSampler, TokenBudgetBatchSampler
from .distributed import local_rank, say, world_size
from .errors import SettingsError
from .settings import TrainSettings

BATCHINGS = ("grouped", "padded", "padding_free", "tokens")


def load_unsloth_model(model_path: str | Path, settings: TrainSettings, *,
                       use_gradient_checkpointing: str | bool = "unsloth") -> tuple[Any, Any]:
    """(model, tokenizer): the base model (4-bit QLoRA where settings.load_in_4bit, else 16-bit) with LoRA on
    settings.target_modules, via Unsloth. settings.offload_embedding: keep the input embedding in CPU memory (else
    Unsloth moves it only when memory is tight)."""
    from unsloth import FastLanguageModel
    options = {"device_map": {"": local_rank()}} if world_size() > 1 else {}  # one GPU per process
    if settings.offload_embedding:
        options["offload_embedding"] = True
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_path, max_seq_length=settings.max_seq_length,
                                                         load_in_4bit=settings.load_in_4bit, dtype=None, **options)
    model = FastLanguageModel.get_peft_model(model, r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                             lora_dropout=settings.lora_dropout,
                                             target_modules=list(settings.target_modules), bias="none",
                                             use_gradient_checkpointing=use_gradient_checkpointing,
                                             random_state=settings.seed, use_rslora=settings.use_rslora)
    return model, tokenizer


def choose_batching(batching: Optional[str], settings: TrainSettings) -> str:
    """The batching a run uses: `batching` as asked, or by default "tokens" when BATCH_TOKENS > 0, else "grouped"."""
    if batching is None:
        return "tokens" if settings.batch_tokens > 0 else "grouped"
    if batching not in BATCHINGS:
        raise SettingsError(f"batching must be one of {', '.join(BATCHINGS)} (or None: \"tokens\" when "
                            f"BATCH_TOKENS > 0, else \"grouped\"), not {batching!r}.")
    if batching == "tokens" and settings.batch_tokens <= 0:
        raise SettingsError("batching=\"tokens\" needs a token budget: set BATCH_TOKENS (--batch-tokens) to the "
                            "padded tokens a batch may hold, e.g. 16384, or leave batching at None.")
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
                                          multiple=self.budget_multiple)
        return self.accelerator.prepare(DataLoader(
            dataset, batch_sampler=sampler, collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory))


def trainer_class_for(batching: str, sft_trainer: type, settings: TrainSettings,
                      pad_to_multiple_of: Optional[int]) -> tuple[type, dict]:
    """(the trainer class, the extra arguments it takes) of a batching; "padded" and "padding_free" are TRL's own."""
    if batching == "grouped":
        return on_base(LengthGroupedSampling, sft_trainer, "GroupedSFTTrainer"), {}
    if batching == "tokens":
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


def sft_config(settings: TrainSettings, *, output_dir, batching: str, evaluating: bool,
               pad_to_multiple_of: Optional[int]):
    """TRL's SFTConfig of a run: checkpoints in <output_dir>/checkpoints/checkpoint-<step>, as on the CPU path."""
    import torch
    from trl import SFTConfig
    s, padding_free, bf16 = settings, batching == "padding_free", torch.cuda.is_bf16_supported()
    evaluating = evaluating and s.eval_steps > 0
    return SFTConfig(
        output_dir=str(Path(output_dir) / "checkpoints"), per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps, learning_rate=s.learning_rate,
        weight_decay=s.weight_decay, warmup_steps=s.warmup_steps, lr_scheduler_type=s.lr_scheduler_type,
        num_train_epochs=s.num_epochs, max_steps=s.max_steps if s.max_steps and s.max_steps > 0 else -1,
        logging_steps=s.logging_steps, seed=s.seed, optim="adamw_8bit", bf16=bf16, fp16=not bf16,
        # The rows are already cut at MAX_SEQ_LENGTH by tokenize_rows. TRL >= 1.0 refuses padding_free together
        # with a max_length it cannot enforce on pre-tokenized rows, so max_length is only set without padding_free.
        max_length=None if padding_free else s.max_seq_length, padding_free=padding_free,
        pad_to_multiple_of=None if padding_free else pad_to_multiple_of,
        report_to="none", dataset_num_proc=1,
        save_strategy="steps" if s.save_steps > 0 else "no", save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        eval_strategy="steps" if evaluating else "no", eval_steps=s.eval_steps or None,
        metric_for_best_model="eval_loss" if evaluating else None,
    )


# ----------------------------------------------------------------------------------------------- training

def train_unsloth(model, tokenizer, rows: list[dict], settings: TrainSettings, *, output_dir: str | Path,
                  eval_rows: Optional[list[dict]] = None, on_log: Optional[Callable[[dict], Any]] = None,
                  batching: Optional[str] = None, resume_from: Optional[str | Path] = None,
                  pad_to_multiple_of: Optional[int] = 64) -> list[dict]:
    """TRL SFTTrainer on pre-tokenized rows (input_ids + labels: the prompt is already masked); the history of
    logs, then one entry with train_wall_s and peak_gpu_memory_gib.

    batching: see the module's docstring (None: "tokens" when settings.batch_tokens > 0, else "grouped").
    pad_to_multiple_of: padded batches are padded to a multiple of this many tokens (None: to their longest row);
    few distinct batch shapes keep the compiled blocks from recompiling for new lengths."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    batching = choose_batching(batching, settings)
    history, counter = [], TokenCounter(tokenizer.pad_token_id)
    callback = on_base(HistoryLogging, TrainerCallback, "HistoryCallback")(history, counter, on_log)
    config = sft_config(settings, output_dir=output_dir, batching=batching, evaluating=bool(eval_rows),
                        pad_to_multiple_of=pad_to_multiple_of)
    trainer_class, extra = trainer_class_for(batching, SFTTrainer, settings, pad_to_multiple_of)
    trainer = trainer_class(model=model, processing_class=tokenizer, args=config, callbacks=[callback],
                            train_dataset=Dataset.from_list(rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None, **extra)
    with counter.hooked(model):
        torch.cuda.reset_peak_memory_stats()
        train_start = time.time()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_wall = time.time() - train_start
    if eval_rows:
        trainer.evaluate()  # logged through the callback as eval_loss
    report_run(history, batching=batching, steps=trainer.state.global_step, tokens=counter.count(),
               train_wall=train_wall)
    return history


def report_run(history: list, *, batching: str, steps: int, tokens: int, train_wall: float) -> None:
    """The run's last history entry (wall time of trainer.train(), peak GPU memory) and its one-line summary."""
    import torch
    peak = torch.cuda.max_memory_allocated() / 2**30
    history.append({"step": steps, "train_wall_s": train_wall, "peak_gpu_memory_gib": peak})
    say(f"GPU training ({batching} batches): {steps} steps, {tokens} tokens in {train_wall:.1f} s "
        f"({tokens / train_wall if train_wall else 0:.0f} tokens/s in trainer.train()), peak GPU memory {peak:.2f} GiB")

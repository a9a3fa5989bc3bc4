"""The CUDA path: Unsloth FastLanguageModel + TRL SFTTrainer on the same tokenized rows as the CPU path."""
import time
from pathlib import Path


def unsloth_available():
    """(True, "") when a CUDA GPU and Unsloth are both there, else (False, why)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return False, "no CUDA GPU"
    except ImportError as error:
        return False, str(error)
    try:
        import unsloth  # noqa: F401  (must be imported before transformers/peft/trl to patch them)
    except Exception as error:  # unsloth raises many kinds of errors on import where it cannot run
        return False, f"Unsloth is not importable ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
    return True, ""


def load_unsloth_model(model_path, s, load_in_4bit=True, use_gradient_checkpointing="unsloth"):
    """Base model (4-bit QLoRA or 16-bit) with LoRA on all linear projections, via Unsloth.
    s.offload_embedding: keep the input embedding in CPU memory (else Unsloth moves it only when memory is tight)."""
    from unsloth import FastLanguageModel
    from .distributed import local_rank, world_size
    options = {"device_map": {"": local_rank()}} if world_size() > 1 else {}  # one GPU per process
    if s.offload_embedding:
        options["offload_embedding"] = True
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=model_path, max_seq_length=s.max_seq_length,
                                                         load_in_4bit=load_in_4bit, dtype=None, **options)
    model = FastLanguageModel.get_peft_model(model, r=s.lora_r, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                                             target_modules=list(s.target_modules), bias="none",
                                             use_gradient_checkpointing=use_gradient_checkpointing,
                                             random_state=s.seed, use_rslora=s.use_rslora)
    return model, tokenizer


BATCHINGS = ("grouped", "padded", "padding_free", "tokens")


def train_unsloth(model, tokenizer, rows, s, output_dir, eval_rows=None, on_log=None, batching="grouped",
                  resume_from=None, padding_free=None, pad_to_multiple_of=64):
    """TRL SFTTrainer on pre-tokenized rows (input_ids + labels: the prompt is already masked).

    batching: "tokens" whenever s.batch_tokens > 0: batches of rows of similar length, as many as fit in
    s.batch_tokens padded tokens (TokenBudgetBatchSampler), so short rows no longer make light steps;
    "grouped" (default): padded batches of rows of similar length (LengthGroupedSampler), which run
    Unsloth's compiled decoder blocks and carry few pad tokens; "padded": padded batches in random order;
    "padding_free": each batch flattened into one row (TRL padding_free), no pad tokens but, on this stack, no
    compiled blocks and one attention call per distinct row length (see bench/README.md). `padding_free=True`
    is the same as batching="padding_free" (`False`: "grouped"). pad_to_multiple_of: padded batches are padded
    to a multiple of this many tokens (None: to their longest row); few distinct batch shapes keep the compiled
    blocks from recompiling for new lengths."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from .batching import LengthGroupedSampler, TokenBudgetBatchSampler

    if padding_free is not None:
        batching = "padding_free" if padding_free else "grouped"
    if s.batch_tokens and s.batch_tokens > 0:
        batching = "tokens"
    if batching not in BATCHINGS:
        raise ValueError(f"batching must be one of {BATCHINGS}, not {batching!r}")
    padding_free = batching == "padding_free"

    history, start, seen = [], time.time(), {"tokens": 0, "depth": 0}  # tokens: a count on the GPU, read at logs

    def count_tokens(module, args, kwargs):
        """Non-padding tokens of each training forward: Unsloth's trainer logs no token count (TRL's num_tokens).
        Hooked on the PEFT wrapper and on the base model, counted once per forward at the outermost one reached."""
        seen["depth"] += 1
        if seen["depth"] > 1 or not (module.training and torch.is_grad_enabled()):
            return
        mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids", args[0] if args else None)
        if mask is not None:  # summed on the GPU: no host sync before each forward
            seen["tokens"] = seen["tokens"] + mask.sum()
        elif ids is not None:  # padding-free: one flattened row
            seen["tokens"] = seen["tokens"] + (ids != tokenizer.pad_token_id).sum()

    def forward_done(module, args, kwargs, output):
        seen["depth"] -= 1

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                entry = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
                if "loss" in entry:
                    entry["tokens"] = int(seen["tokens"])
                entry["elapsed_s"] = time.time() - start
                history.append(entry)
                if on_log:
                    on_log(entry)

    bf16 = torch.cuda.is_bf16_supported()
    config = SFTConfig(
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
        # checkpoints in <output_dir>/checkpoints/checkpoint-<step>, the same place as the CPU path's
        save_strategy="steps" if s.save_steps > 0 else "no", save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        eval_strategy="steps" if eval_rows and s.eval_steps > 0 else "no", eval_steps=s.eval_steps or None,
        metric_for_best_model="eval_loss" if eval_rows and s.eval_steps > 0 else None,
    )
    trainer_class = SFTTrainer
    if batching == "grouped":
        class GroupedSFTTrainer(SFTTrainer):
            def _get_train_sampler(self, train_dataset=None, *args, **kwargs):
                dataset = train_dataset if train_dataset is not None else self.train_dataset
                return LengthGroupedSampler([len(ids) for ids in dataset["input_ids"]],
                                            self.args.per_device_train_batch_size, seed=self.args.seed)
        trainer_class = GroupedSFTTrainer
    elif batching == "tokens":
        class TokenBudgetSFTTrainer(SFTTrainer):
            def get_train_dataloader(self):
                """The Trainer's loader with our batch_sampler; accelerate gives each process every n-th batch,
                and the Trainer's set_epoch reaches the sampler (transformers 5.17), also on resume."""
                from torch.utils.data import DataLoader
                dataset = self._remove_unused_columns(self.train_dataset, description="training")
                sampler = TokenBudgetBatchSampler([len(ids) for ids in dataset["input_ids"]], s.batch_tokens,
                                                  seed=self.args.seed, multiple=pad_to_multiple_of or 1)
                return self.accelerator.prepare(DataLoader(
                    dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                    num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory))
        trainer_class = TokenBudgetSFTTrainer
    trainer = trainer_class(model=model, processing_class=tokenizer, args=config, callbacks=[Log()],
                            train_dataset=Dataset.from_list(rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None)
    hooks = []
    for module in {id(m): m for m in (model, model.get_base_model())}.values():
        hooks += [module.register_forward_pre_hook(count_tokens, with_kwargs=True),
                  module.register_forward_hook(forward_done, with_kwargs=True, always_call=True)]
    torch.cuda.reset_peak_memory_stats()
    train_start = time.time()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    finally:
        for hook in hooks:
            hook.remove()
    train_wall = time.time() - train_start
    if eval_rows:
        trainer.evaluate()  # logged through the callback as eval_loss
    tokens = int(seen["tokens"])
    peak = torch.cuda.max_memory_allocated() / 2**30
    history.append({"step": trainer.state.global_step, "train_wall_s": train_wall, "peak_gpu_memory_gib": peak})
    print(f"GPU training ({batching} batches): {trainer.state.global_step} steps, {tokens} tokens in "
          f"{train_wall:.1f} s ({tokens / train_wall if train_wall else 0:.0f} tokens/s in trainer.train()), "
          f"peak GPU memory {peak:.2f} GiB")
    return history

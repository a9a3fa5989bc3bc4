"""Step 2: fine-tune a LoRA adapter on the dataset from step 1.

On a CUDA GPU with Unsloth installed: Unsloth QLoRA (4-bit) + TRL SFTTrainer. Elsewhere: transformers +
PEFT in a plain PyTorch loop on the CPU. Same data, prompt format, LoRA settings and adapter format.
TRAINING_MODE cpt trains on the papers' text instead (Unsloth's continued-pretraining trainer on the GPU); a cpt
adapter as INIT_ADAPTER of an sft run makes cpt-then-sft.
"""
import sys

from common.adapter import restore_trained_update, save_adapter, scale_adapter, with_init_adapter
from common.checkpoints import check_output_space
from common.config import hf_token, parse_settings, set_environment_defaults
from common.cpt import check_packed, packed_text_splits
from common.dataset import check_dataset_tokenizer, load_dataset_dir
from common.distributed import check_launch, is_main_process, main_process_first, say, world_size
from common.errors import PipelineError
from common.evaluation import knowledge_check
from common.export import check_push_settings, push_folder
from common.gpu_memory import with_load_in_4bit
from common.models import check_target_modules, choose_device, load_tokenizer, resolve_model_path
from common.replay import hold_out, mix_replay, replay_records
from common.report import run_summary, write_training_report
from common.runs import check_mean_of_runs, train_runs, with_mean_of_runs
from common.settings import TrainSettings
from common.tokenizing import check_tokenized, tokenize_cached, tokenize_rows
from common.tracking import check_tracking
from common.training import load_model_for_training, with_learning_rate

DATASET_DIR = "data/dataset"  # the dataset saved by 01_create_dataset.py
OUTPUT_DIR = "outputs/run"  # where the adapter, checkpoints and report go
MODEL_NAME = "embedded/SmolLM2-135M-Instruct"  # base model: embedded, a local folder or a Hub name
TRAINING_MODE = "sft"  # sft (the instruction records) or cpt (continued pretraining: the papers' text, every token)
INIT_ADAPTER = None  # start from this earlier adapter folder, e.g. a cpt run's outputs/cpt/adapter (None: fresh LoRA)
PROMPT_FORMAT = "chat"  # chat (the model's chat template) or alpaca (the classic Alpaca prompt)
TRAIN_ON_RESPONSES_ONLY = True  # mask the prompt from the loss
REPLAY_FRACTION = 0.25  # share of rows that are the base model's own answers to everyday prompts (keeps what it knew)
MAX_SEQ_LENGTH = 1024  # longest tokenized row; longer rows are cut, counted and reported
LOAD_IN_4BIT = "auto"  # GPU: auto (a 16-bit base where it takes <= 1/4 of free memory, else QLoRA), true, false
OFFLOAD_EMBEDDING = False  # GPU: keep the input embedding in CPU memory (Llama-3.1-8B: 1 GiB less GPU memory)
GRADIENT_CHECKPOINTING = "auto"  # GPU: auto (off where the batches fit in free memory), unsloth (lean), true, false
LORA_R = 32  # LoRA rank
LORA_ALPHA = 64  # LoRA scaling (alpha / r)
LORA_DROPOUT = 0.0  # dropout on the LoRA layers
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # layers with LoRA
USE_RSLORA = False  # rank-stabilised LoRA scaling
LEARNING_RATE = -1.0  # peak learning rate; -1 (auto): 2e-3 under 1B parameters (chosen on the 135M model), else 2e-4
EMBEDDING_LEARNING_RATE = None  # for embed_tokens / lm_head when in TARGET_MODULES (None: LEARNING_RATE / 10)
WEIGHT_DECAY = 0.0  # AdamW weight decay on the LoRA weights
LR_SCHEDULER_TYPE = "linear"  # learning-rate schedule after the warm-up (transformers' names: linear, cosine...)
WARMUP_STEPS = 3  # linear warm-up steps
BATCH_SIZE = 4  # rows per device per step, on average: an epoch has ceil(rows / BATCH_SIZE) steps
BATCH_TOKENS = -1  # -1: those steps, rows of similar length, about equal tokens; > 0: up to this many; 0: rows
GRADIENT_ACCUMULATION_STEPS = 1  # batches per optimizer step
NUM_EPOCHS = 2.0  # passes over the train split (ignored when MAX_STEPS > 0)
MAX_STEPS = -1  # stop after this many optimizer steps (-1: use NUM_EPOCHS)
LOGGING_STEPS = 1  # log the training loss every N steps
EVAL_STEPS = 50  # loss on the test split every N steps (0: only at the end); on 2 CPU cores one takes ~12 s
SAVE_STEPS = 10  # write a checkpoint every N steps (0: none, so no resume)
SAVE_TOTAL_LIMIT = 2  # checkpoints kept: the latest ones, plus the best by eval loss
ADAPTER_SCALE = -1.0  # share of the trained LoRA update kept (1: as trained; less forgets less; -1: auto)
MEAN_OF_RUNS = -1  # runs from seeds SEED, SEED+1...; their mean update kept (-1: 3 on a GPU at scale 1, else 1 at 0.8)
RUNS_SIDE_BY_SIDE = "auto"  # those runs at once, each in its own process: auto (on a GPU with room for all), true, false
KEEP_BEST_EPOCH = True  # keep the epoch that learned most about the papers net of what it forgot, not just the last
EVALUATE = True  # after training: base vs tuned on held-out loss, closed-book questions and general prompts
REPORT_TO = "none"  # experiment tracking: none, tensorboard, wandb, trackio, or a comma list (TRL's report_to)
PUSH_TO_HUB = False  # after training, upload the adapter to a private Hub repo (HF_TOKEN from .env)
HUB_MODEL_ID = None  # the Hub repo for --push-to-hub, e.g. you/papers-lora
RESUME = True  # continue from the last checkpoint in OUTPUT_DIR if there is one (--no-resume: start over)
SEED = 42  # random seed
DEVICE = "auto"  # auto (CUDA + Unsloth if there, else CPU), cuda or cpu


def main():
    s = parse_settings(TrainSettings, globals())
    set_environment_defaults()
    device = choose_device(s.device)  # first: Unsloth must be imported before transformers to patch it
    check_launch(device)
    if s.push_to_hub:
        check_push_settings(s.hub_model_id, hf_token())  # fail now, not after training
    s, runs = with_mean_of_runs(s, device)  # auto: 3 runs at scale 1 on a GPU, 1 run at 0.8 on the CPU
    say(runs)
    check_mean_of_runs(s)
    check_tracking(s.report_to)  # a missing package or login: now, not after the data is ready
    dataset = load_dataset_dir(s.dataset_dir)
    model_path = resolve_model_path(s.model_name)
    s = with_init_adapter(s, model_path)  # an earlier adapter (e.g. cpt's) trains on with its own LoRA shape
    s, rate = with_learning_rate(s, model_path)  # auto: by the model's size
    say(rate)
    check_target_modules(model_path, s.target_modules)  # a misspelt layer: now, not after the self-replay
    tokenizer = load_tokenizer(model_path)
    check_dataset_tokenizer(s.dataset_dir, tokenizer)
    held_out = []  # the base model's own everyday answers kept out of training: the epoch choice's forgetting measure
    if s.training_mode == "cpt":  # the papers' text, packed; no self-replay: its rows are chat-format answers
        train, test = packed_text_splits(dataset, tokenizer, s.max_seq_length)
        check_packed(train)
    else:
        with main_process_first():  # replay made and rows tokenized once, by the main process; the others read caches
            replay, held_out = hold_out(replay_records(model_name=s.model_name, model_path=model_path,
                                                       tokenizer=tokenizer, prompt_format=s.prompt_format,
                                                       device=device) if s.replay_fraction > 0 else [])
            records = {"train": mix_replay(list(dataset["train"]), replay, s.replay_fraction), "test": dataset["test"]}
            train, test = (tokenize_cached(records[split], tokenizer, s.prompt_format, s.max_seq_length,
                                           responses_only=s.train_on_responses_only,
                                           cache_file=f"{s.output_dir}/tokenized/{split}.json")
                           for split in ("train", "test"))
        check_tokenized(train, tokenizer)
    check_output_space(s.output_dir, model_path, s)
    s = with_load_in_4bit(s, model_path, device)  # auto: a 16-bit base where the card has room for it
    model = load_model_for_training(model_path, s, device)
    if s.init_adapter and (restored := restore_trained_update(model, s.init_adapter)):
        say(restored)
    history, epochs = train_runs(model, tokenizer, train.rows, s, device=device, eval_rows=test.rows,
                                 held_out=held_out, model_path=model_path)  # MEAN_OF_RUNS runs, each its best epoch
    say(scale_adapter(model, s.adapter_scale))
    adapter_dir = save_adapter(model, tokenizer, s, history)
    summary = run_summary(train, test, history, device=device, s=s, processes=world_size())
    report = write_training_report(s, summary, history)
    say(f"Adapter saved to {adapter_dir}; report: {report}")
    if s.evaluate and is_main_process():  # held-out loss on the test records as sft trains them, in either mode
        held_out_rows = test if s.training_mode == "sft" else \
            tokenize_rows(dataset["test"], tokenizer, s.prompt_format, s.max_seq_length)
        knowledge_check(model, tokenizer, test_rows=held_out_rows.rows, dataset_dir=s.dataset_dir,
                        prompt_format=s.prompt_format, output_dir=s.output_dir, epochs=epochs)
    if s.push_to_hub and is_main_process():  # last: a failed push loses nothing
        say(f"Pushed {adapter_dir} to {push_folder(adapter_dir, s.hub_model_id, hf_token())}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PipelineError as error:  # each says what to do
        sys.exit(f"Error: {error}")

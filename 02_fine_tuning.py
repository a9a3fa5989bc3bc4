"""Step 2: fine-tune a LoRA adapter on the dataset from step 1.

On a CUDA GPU with Unsloth installed: Unsloth QLoRA (4-bit) + TRL SFTTrainer. Elsewhere: transformers +
PEFT in a plain PyTorch loop on the CPU. Same data, prompt format, LoRA settings and adapter format.
"""
import sys

from common.config import apply_cli_overrides, hf_token
from common.dataset import load_dataset_dir
from common.distributed import (LaunchError, check_launch, is_main_process, main_process_first, quiet_unless_main,
                                world_size)
from common.evaluation import knowledge_check
from common.export import ExportError, check_push_settings, push_folder
from common.models import ModelError, load_tokenizer, resolve_model_path
from common.report import write_training_report
from common.training import (TrainSettings, check_dataset_tokenizer, check_output_space, check_tokenized,
                             choose_device, load_model_for_training, resume_checkpoint, run_summary, save_adapter,
                             tokenize_cached, train_model)

DATASET_DIR = "data/dataset"  # the dataset saved by 01_create_dataset.py
OUTPUT_DIR = "outputs/run"  # where the adapter, checkpoints and report go
MODEL_NAME = "embedded/SmolLM2-135M-Instruct"  # base model: embedded, a local folder or a Hub name
PROMPT_FORMAT = "chat"  # chat (the model's chat template) or alpaca (the classic Alpaca prompt)
TRAIN_ON_RESPONSES_ONLY = True  # mask the prompt from the loss
MAX_SEQ_LENGTH = 1024  # longest tokenized row; longer rows are cut, counted and reported
LOAD_IN_4BIT = True  # GPU: QLoRA (4-bit base); False for 16-bit LoRA
OFFLOAD_EMBEDDING = False  # GPU: keep the input embedding in CPU memory (Llama-3.1-8B: 1 GiB less GPU memory)
LORA_R = 16  # LoRA rank
LORA_ALPHA = 32  # LoRA scaling (alpha / r)
LORA_DROPOUT = 0.0  # dropout on the LoRA layers
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # layers with LoRA
USE_RSLORA = False  # rank-stabilised LoRA scaling
LEARNING_RATE = 1e-3  # peak learning rate
WARMUP_STEPS = 3  # linear warm-up steps
BATCH_SIZE = 4  # rows per device per step
BATCH_TOKENS = 0  # > 0: instead, rows of similar length up to this many padded tokens a step (mixed lengths: faster)
GRADIENT_ACCUMULATION_STEPS = 1  # batches per optimizer step
NUM_EPOCHS = 5.0  # passes over the train split (ignored when MAX_STEPS > 0)
MAX_STEPS = -1  # stop after this many optimizer steps (-1: use NUM_EPOCHS)
LOGGING_STEPS = 1  # log the training loss every N steps
EVAL_STEPS = 10  # loss on the test split every N steps (0: only at the end)
SAVE_STEPS = 10  # write a checkpoint every N steps (0: none, so no resume)
SAVE_TOTAL_LIMIT = 2  # checkpoints kept: the latest ones, plus the best by eval loss
EVALUATE = True  # after training: base vs tuned on held-out loss, closed-book questions and general prompts
PUSH_TO_HUB = False  # after training, upload the adapter to a private Hub repo (HF_TOKEN from .env)
HUB_MODEL_ID = None  # the Hub repo for --push-to-hub, e.g. you/papers-lora
RESUME = True  # continue from the last checkpoint in OUTPUT_DIR if there is one (--no-resume: start over)
SEED = 42  # random seed
DEVICE = "auto"  # auto (CUDA + Unsloth if there, else CPU), cuda or cpu


def main():
    settings = apply_cli_overrides(globals())
    quiet_unless_main()  # under torchrun / accelerate launch, only the main process prints and writes
    device = choose_device(DEVICE)  # first: Unsloth must be imported before transformers to patch it
    check_launch(device)
    if PUSH_TO_HUB:
        check_push_settings(HUB_MODEL_ID, hf_token())  # fail now, not after training
    train_settings = TrainSettings.from_constants(settings)
    dataset = load_dataset_dir(DATASET_DIR)
    model_path = resolve_model_path(MODEL_NAME)
    tokenizer = load_tokenizer(model_path)
    check_dataset_tokenizer(DATASET_DIR, tokenizer)
    with main_process_first():  # tokenized once, by the main process; the others read its cache
        train, test = (tokenize_cached(dataset[split], tokenizer, PROMPT_FORMAT, MAX_SEQ_LENGTH,
                                       TRAIN_ON_RESPONSES_ONLY, f"{OUTPUT_DIR}/tokenized/{split}.json")
                       for split in ("train", "test"))
    check_tokenized(train, tokenizer)
    check_output_space(OUTPUT_DIR, model_path, train_settings)
    resume_from = resume_checkpoint(OUTPUT_DIR, RESUME)
    model = load_model_for_training(model_path, train_settings, device, LOAD_IN_4BIT)
    history = train_model(model, tokenizer, train.rows, train_settings, device, OUTPUT_DIR, test.rows, resume_from)
    adapter_dir = save_adapter(model, tokenizer, OUTPUT_DIR, settings, history)
    summary = run_summary(train, test, history, device, train_settings, world_size())
    report = write_training_report(OUTPUT_DIR, settings, summary, history)
    print(f"Adapter saved to {adapter_dir}; report: {report}")
    if EVALUATE and is_main_process():
        knowledge_check(model, tokenizer, test.rows, DATASET_DIR, PROMPT_FORMAT, OUTPUT_DIR)
    if PUSH_TO_HUB and is_main_process():  # last: a failed push loses nothing
        print(f"Pushed {adapter_dir} to {push_folder(adapter_dir, HUB_MODEL_ID, hf_token())}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ModelError, LaunchError, ExportError, ValueError, OSError) as error:  # each says what to do
        sys.exit(f"Error: {error}")

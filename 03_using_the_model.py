"""Step 3: ask the fine-tuned model (base model + the LoRA adapter from step 2), compare it, export it.

--prompt "...": one answer. --prompts-file F: answers to every prompt in F, as JSONL. Neither: a chat.
--compare: base model (adapter off) next to the tuned model. --merge-to / --gguf-to / --push-to-hub: export.
"""
import sys

from common.adapter import found_adapter_dir
from common.config import parse_settings, set_environment_defaults
from common.errors import PipelineError
from common.evaluation import evaluate_adapter
from common.export import export
from common.inference import answer
from common.models import choose_device
from common.settings import AnswerSettings

ADAPTER_DIR = "outputs/run/adapter"  # the adapter folder written by 02_fine_tuning.py
MODEL_NAME = None  # base model; None: the one the adapter was trained on
PROMPT = None  # one question to answer; None: --prompts-file, or else an interactive chat
PROMPTS_FILE = None  # prompts to answer: one per line, or JSONL with "instruction" (+ "input") or "prompt"
ANSWERS_FILE = None  # JSONL answers to --prompts-file; None: <adapter-dir>/../answers.jsonl
COMPARE = False  # also answer with the base model (adapter off) and show both side by side
COMPARE_FILE = None  # markdown report of --compare; None: <adapter-dir>/../compare.md
PROMPT_FORMAT = None  # chat or alpaca; None: the format used in training
MAX_NEW_TOKENS = 128  # longest answer, in tokens
TEMPERATURE = 0.0  # 0: greedy (deterministic); higher: more varied answers
TOP_P = 0.9  # nucleus sampling (when TEMPERATURE > 0)
REPETITION_PENALTY = 1.1  # > 1 discourages repeating itself
SEED = 0  # random seed for sampling
BATCH_SIZE = 8  # prompts generated together (padded on the left)
DEVICE = "auto"  # auto (CUDA + Unsloth if there, else CPU), cuda or cpu
MERGE_TO = None  # write base + adapter merged here (safetensors, loads without PEFT)
MERGE_DTYPE = "bfloat16"  # precision of the merged weights: bfloat16, float16 or float32
GGUF_TO = None  # write a GGUF file of the merged model here (needs llama.cpp: set LLAMA_CPP_DIR)
GGUF_QUANT = "q8_0"  # GGUF precision: q8_0, q4_k_m or f16
PUSH_TO_HUB = False  # upload the adapter (the merged model with --merge-to) to a private Hub repo
HUB_MODEL_ID = None  # the Hub repo for --push-to-hub, e.g. you/papers-lora
EVALUATE = False  # knowledge check instead of answering: base vs tuned on DATASET_DIR (eval.md next to the adapter)
DATASET_DIR = "data/dataset"  # the dataset of step 01, for --evaluate (test split and closed-book questions)


def main():
    s = parse_settings(AnswerSettings, globals())
    s = s.replace(adapter_dir=found_adapter_dir(s.adapter_dir))  # 02's output folder given: its adapter
    set_environment_defaults()
    exporting = s.merge_to or s.gguf_to or s.push_to_hub
    answering = s.prompt or s.prompts_file or not exporting  # an export alone does not open the chat
    device = choose_device(s.device) if answering or s.evaluate else "cpu"  # first: Unsloth patches transformers
    if s.evaluate:
        evaluate_adapter(s.adapter_dir, dataset_dir=s.dataset_dir, model_name=s.model_name,
                         prompt_format=s.prompt_format, device=device)
        return 0
    if exporting:
        export(s)
    if answering:
        answer(s, device=device)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PipelineError as error:  # each says what to do
        sys.exit(f"Error: {error}")

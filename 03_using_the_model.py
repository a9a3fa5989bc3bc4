"""Step 3: ask the fine-tuned model (base model + the LoRA adapter from step 2), compare it, export it.

--prompt "...": one answer. --prompts-file F: answers to every prompt in F, as JSONL. Neither: a chat.
--compare: base model (adapter off) next to the tuned model. --merge-to / --gguf-to / --push-to-hub: export.
"""
import sys
import tempfile
from pathlib import Path

from common.config import apply_cli_overrides, hf_token
from common.export import (ExportError, check_gguf, convert_to_gguf, gguf_tools, merge_adapter,
                           push_folder)
from common.inference import (PromptsFileError, base_model_name, chat, compare_answers, compare_markdown,
                              generate, generate_batched, load_model_with_adapter, read_prompts, side_by_side,
                              write_jsonl)
from common.dataset import load_dataset_dir
from common.evaluation import evaluate_knowledge, summary_line, write_eval_report
from common.knowledge import read_questions
from common.models import ModelError
from common.training import choose_device, tokenize_rows

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


def export():
    """--merge-to, --gguf-to, --push-to-hub, in that order."""
    if GGUF_TO:
        gguf_tools(GGUF_QUANT)  # fail before the merge when llama.cpp is missing
    with tempfile.TemporaryDirectory() as tmp:
        merged = None
        if MERGE_TO or GGUF_TO:
            merged = merge_adapter(ADAPTER_DIR, MERGE_TO or Path(tmp) / "merged", MODEL_NAME, MERGE_DTYPE)
            print(f"Merged model ({MERGE_DTYPE}) saved to {merged}" if MERGE_TO else "Merged model ready")
        if GGUF_TO:
            gguf = convert_to_gguf(merged, GGUF_TO, GGUF_QUANT)
            info = check_gguf(gguf, merged)
            print(f"GGUF saved to {gguf}: {info['architecture']}, {info['tensors']} tensors, {info['layers']} layers")
        if PUSH_TO_HUB:
            folder = MERGE_TO or ADAPTER_DIR
            print(f"Pushed {folder} to {push_folder(folder, HUB_MODEL_ID, hf_token())}")


def answer():
    """The generation modes: one prompt, a prompts file, or a chat; with --compare, base vs tuned."""
    device = choose_device(DEVICE)  # first: Unsloth must be imported before transformers to patch it
    prompts = read_prompts(PROMPTS_FILE) if PROMPTS_FILE else [{"instruction": PROMPT, "input": ""}]
    if COMPARE and not (PROMPT or PROMPTS_FILE):
        raise PromptsFileError("--compare needs --prompt or --prompts-file.")
    model, tokenizer, trained = load_model_with_adapter(ADAPTER_DIR, MODEL_NAME, device)
    generation = dict(prompt_format=PROMPT_FORMAT or trained.get("PROMPT_FORMAT", "chat"),
                      max_new_tokens=MAX_NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P,
                      repetition_penalty=REPETITION_PENALTY, seed=SEED)
    run_dir = Path(ADAPTER_DIR).resolve().parent
    if COMPARE:
        rows = compare_answers(model, tokenizer, prompts, BATCH_SIZE, **generation)
        print(side_by_side(rows))
        report = Path(COMPARE_FILE or run_dir / "compare.md")
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(compare_markdown(rows, ADAPTER_DIR, base_model_name(ADAPTER_DIR, MODEL_NAME)))
        print(f"\nComparison written to {report}")
    elif PROMPTS_FILE:
        answers = generate_batched(model, tokenizer, prompts, BATCH_SIZE, **generation)
        path = write_jsonl(ANSWERS_FILE or run_dir / "answers.jsonl",
                           [{**p, "answer": a} for p, a in zip(prompts, answers)])
        print(f"{len(answers)} answers written to {path}")
    elif PROMPT:
        print(f"\nPrompt: {PROMPT}\nAnswer: {generate(model, tokenizer, prompts, **generation)[0]}")
    else:
        chat(model, tokenizer, **generation)


def evaluate():
    """--evaluate: held-out perplexity, closed-book recall and forgetting, base vs tuned."""
    device = choose_device(DEVICE)
    model, tokenizer, trained = load_model_with_adapter(ADAPTER_DIR, MODEL_NAME, device)
    prompt_format = PROMPT_FORMAT or trained.get("PROMPT_FORMAT", "chat")
    test = tokenize_rows(load_dataset_dir(DATASET_DIR)["test"], tokenizer, prompt_format,
                         trained.get("MAX_SEQ_LENGTH", 1024))
    results = evaluate_knowledge(model, tokenizer, test.rows, read_questions(DATASET_DIR), prompt_format)
    print(f"{summary_line(results)}; report: {write_eval_report(Path(ADAPTER_DIR).resolve().parent, results)}")


def main():
    apply_cli_overrides(globals())
    if EVALUATE:
        try:
            evaluate()
        except (ModelError, FileNotFoundError, ValueError) as error:
            print(f"Error: {error}", file=sys.stderr)
            return 1
        return 0
    exporting = MERGE_TO or GGUF_TO or PUSH_TO_HUB
    try:
        if exporting:
            export()
        if PROMPT or PROMPTS_FILE or not exporting:  # an export alone does not open the chat
            answer()
    except (ModelError, PromptsFileError, ExportError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

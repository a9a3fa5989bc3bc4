"""Load the base model with a trained adapter and generate, formatting prompts exactly as in training."""
import json
import shutil
import textwrap
from pathlib import Path

from .models import ModelError, resolve_model_path
from .prompts import format_prompt

PROMPTS_FORMAT = ('one prompt per line, or JSONL lines with an "instruction" (and optional "input") '
                  'or a "prompt" field')


class PromptsFileError(ValueError):
    """The prompts file is missing, unreadable or empty; the message names it and the expected format."""


def read_training_config(adapter_dir):
    """The settings that 02 saved with the adapter (MODEL_NAME, PROMPT_FORMAT ...)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelError(f"No adapter in {adapter_dir}: run 02_fine_tuning.py first, or pass --adapter-dir "
                         f"pointing at the 'adapter' folder it wrote (e.g. outputs/run/adapter).")
    path = adapter_dir / "training_config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def base_model_name(adapter_dir, model_name=None, settings=None):
    """`model_name`, else the base recorded by 02, else the one PEFT recorded in the adapter."""
    settings = read_training_config(adapter_dir) if settings is None else settings
    if model_name or settings.get("MODEL_NAME"):
        return model_name or settings["MODEL_NAME"]
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]


def attach_adapter(base, adapter_dir, base_name):
    """PeftModel of `base` + the adapter, or a clear error when the adapter was trained on another model."""
    from peft import PeftModel
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as error:
        raise ModelError(f"The adapter in {adapter_dir} does not fit the base model '{base_name}' "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). Pass the --model-name "
                         f"it was trained on.") from error


def load_model_with_adapter(adapter_dir, model_name=None, device="cpu"):
    """(model, tokenizer, training settings). `model_name` overrides the base recorded with the adapter."""
    import torch
    from transformers import AutoTokenizer
    from .models import load_causal_lm

    settings = read_training_config(adapter_dir)
    base_name = base_model_name(adapter_dir, model_name, settings)
    base_path = resolve_model_path(base_name)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if device == "cuda":
        # The base named by `model_name` or the training settings (not the adapter's recorded path, which Unsloth
        # would use and may remap to a Hub repo), as trained (4-bit or 16-bit), then the adapter with plain PEFT.
        # Unsloth's one-token decode step is host bound (hundreds of small launches a token); it replays it as
        # CUDA graphs (the same results, see bench/bench_gpu_inference.py) only where this is set: set it unless
        # the caller chose.
        import os
        os.environ.setdefault("UNSLOTH_DECODE_CUDA_GRAPHS", "1")
        from unsloth import FastLanguageModel
        base, _ = FastLanguageModel.from_pretrained(model_name=base_path, dtype=None,
                                                    max_seq_length=settings.get("MAX_SEQ_LENGTH", 2048),
                                                    load_in_4bit=settings.get("LOAD_IN_4BIT", True))
        model = attach_adapter(base, adapter_dir, base_name)
        FastLanguageModel.for_inference(model)
        return model, tokenizer, settings
    model = attach_adapter(load_causal_lm(base_path, dtype=torch.float32), adapter_dir, base_name)
    model.eval()
    return model, tokenizer, settings


def read_prompts(path):
    """[{"instruction", "input"}] from a text file (one prompt a line) or JSONL (see PROMPTS_FORMAT)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PromptsFileError(f"Cannot read the prompts file {path} ({type(error).__name__}); expected a UTF-8 "
                               f"text file with {PROMPTS_FORMAT}.") from error
    prompts = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line.startswith("{"):
            prompts += [{"instruction": line, "input": ""}] if line else []
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptsFileError(f"{path}, line {number}: not valid JSON ({error.msg}); expected "
                                   f"{PROMPTS_FORMAT}.") from error
        text = record.get("instruction") or record.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise PromptsFileError(f"{path}, line {number}: no \"instruction\" or \"prompt\" text; expected "
                                   f"{PROMPTS_FORMAT}.")
        prompts.append({"instruction": text, "input": record.get("input") or ""})
    if not prompts:
        raise PromptsFileError(f"The prompts file {path} has no prompts; expected {PROMPTS_FORMAT}.")
    return prompts


def generate(model, tokenizer, prompts, prompt_format="chat", max_new_tokens=128, temperature=0.0, top_p=0.9,
             repetition_penalty=1.1, seed=0, streamer=None, history=()):
    """Answers to `prompts` (instructions, or {"instruction", "input"} dicts) in one batch, stopping at EOS.
    A prompt's optional "answer_start" is put at the start of the answer, which continues from it."""
    import torch
    torch.manual_seed(seed)
    prompts = [{"instruction": p, "input": ""} if isinstance(p, str) else p for p in prompts]
    texts = [format_prompt(tokenizer, prompt_format, p["instruction"], p.get("input", ""), history)
             + p.get("answer_start", "") for p in prompts]
    tokenizer.padding_side = "left"  # a decoder-only model continues each row from its last real token
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    sample = temperature > 0
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=sample,
                             temperature=temperature if sample else None, top_p=top_p if sample else None,
                             repetition_penalty=repetition_penalty, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, streamer=streamer)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new_tokens]


def generate_batched(model, tokenizer, prompts, batch_size=8, **generation):
    """`generate` over `prompts` in batches of `batch_size` (left-padded), printing progress."""
    answers = []
    for start in range(0, len(prompts), batch_size):
        answers += generate(model, tokenizer, prompts[start:start + batch_size], **generation)
        print(f"  answered {len(answers)}/{len(prompts)}", flush=True)
    return answers


def compare_answers(model, tokenizer, prompts, batch_size=8, **generation):
    """Rows of (prompt, base answer with the adapter off, tuned answer)."""
    with model.disable_adapter():
        base = generate_batched(model, tokenizer, prompts, batch_size, **generation)
    tuned = generate_batched(model, tokenizer, prompts, batch_size, **generation)
    return [{**p, "base": b, "tuned": t} for p, b, t in zip(prompts, base, tuned)]


def prompt_text(prompt):
    return f"{prompt['instruction']}\n\n{prompt['input']}" if prompt.get("input") else prompt["instruction"]


def side_by_side(rows, width=None):
    """The comparison as terminal text: each prompt, then base and tuned answers in two columns."""
    width = width or shutil.get_terminal_size((100, 20)).columns
    column = max(20, (width - 3) // 2)
    lines = []
    for row in rows:
        lines += ["", "=" * (2 * column + 3), f"Prompt: {prompt_text(row)}", "-" * (2 * column + 3),
                  f"{'base':<{column}} | tuned"]
        left, right = textwrap.wrap(row["base"], column) or [""], textwrap.wrap(row["tuned"], column) or [""]
        for i in range(max(len(left), len(right))):
            lines.append(f"{(left[i] if i < len(left) else ''):<{column}} | {right[i] if i < len(right) else ''}")
    return "\n".join(lines)


def compare_markdown(rows, adapter_dir, base_name):
    """A markdown report: one table row per prompt with the base and the tuned answer."""
    def cell(text):
        return text.replace("|", "\\|").replace("\n", "<br>") or "(empty)"
    table = [f"| {cell(prompt_text(r))} | {cell(r['base'])} | {cell(r['tuned'])} |" for r in rows]
    return "\n".join(["# Base vs tuned", "", f"Base model: `{base_name}`; adapter: `{adapter_dir}`.", "",
                      "| prompt | base | tuned |", "|---|---|---|", *table, ""])


def write_jsonl(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(model, tokenizer, prompt_format, read_line=input, **generation):
    """Interactive chat: streams each answer, keeps the turns as history (chat format; alpaca has no turns);
    /reset clears it, /exit or EOF quits. Returns the history."""
    from transformers import TextStreamer
    history = []
    print("Chat with the tuned model. /reset clears the history, /exit (or Ctrl-D) quits.")
    while True:
        try:
            line = read_line("\nYou: ").strip()
        except EOFError:
            break
        if line == "/exit":
            break
        if line == "/reset":
            history = []
            print("(history cleared)")
            continue
        if not line:
            continue
        print("Model: ", end="", flush=True)
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        answer = generate(model, tokenizer, [line], prompt_format, streamer=streamer, history=history, **generation)[0]
        history.append((line, answer))
    print()
    return history


def answer(adapter_dir, prompt=None, prompts_file=None, compare=False, model_name=None, device="cpu",
           prompt_format=None, batch_size=8, answers_file=None, compare_file=None, **sampling):
    """Step 03's modes: one prompt, a prompts file (answers written as JSONL), or a chat when neither is given.
    With `compare`, the base model (adapter off) and the tuned one side by side, also as a markdown table."""
    if compare and not (prompt or prompts_file):
        raise PromptsFileError("--compare needs --prompt or --prompts-file.")
    prompts = read_prompts(prompts_file) if prompts_file else [{"instruction": prompt, "input": ""}]
    model, tokenizer, trained = load_model_with_adapter(adapter_dir, model_name, device)
    generation = dict(prompt_format=prompt_format or trained.get("PROMPT_FORMAT", "chat"), **sampling)
    run_dir = Path(adapter_dir).resolve().parent
    if compare:
        rows = compare_answers(model, tokenizer, prompts, batch_size, **generation)
        print(side_by_side(rows))
        report = Path(compare_file or run_dir / "compare.md")
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(compare_markdown(rows, adapter_dir, base_model_name(adapter_dir, model_name, trained)))
        print(f"\nComparison written to {report}")
    elif prompts_file:
        answers = generate_batched(model, tokenizer, prompts, batch_size, **generation)
        path = write_jsonl(answers_file or run_dir / "answers.jsonl",
                           [{**p, "answer": a} for p, a in zip(prompts, answers)])
        print(f"{len(answers)} answers written to {path}")
    elif prompt:
        print(f"\nPrompt: {prompt}\nAnswer: {generate(model, tokenizer, prompts, **generation)[0]}")
    else:
        chat(model, tokenizer, **generation)

"""Load the base model with a trained adapter and generate, formatting prompts exactly as in training."""
import json
import shutil
import textwrap
from pathlib import Path

from .adapter import adapter_settings, attach_adapter
from .errors import PromptsFileError
from .gpu_memory import decide_load_in_4bit
from .models import resolve_model_path, use_cpu_attention
from .prompts import format_prompt
from .settings import AnswerSettings, Generation
from .training import inference_dtype

PROMPTS_FORMAT = ('one prompt per line, or JSONL lines with an "instruction" (and optional "input") '
                  'or a "prompt" field')


def load_model_with_adapter(adapter_dir, *, model_name: str | None = None, device: str = "cpu"):
    """(model, tokenizer, the TrainSettings it was trained with). `model_name` overrides the recorded base. On a CPU,
    in bf16 where this CPU runs it fast (training.inference_dtype), else fp32."""
    from transformers import AutoTokenizer
    from .models import load_causal_lm

    trained = adapter_settings(adapter_dir)
    base_name = model_name or trained.model_name
    base_path = resolve_model_path(base_name)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if device == "cuda":
        # The base named by `model_name` or the training settings (not the adapter's recorded path, which Unsloth
        # would use and may remap to a Hub repo), as trained (4-bit or 16-bit), then the adapter with plain PEFT.
        # Unsloth's decoding runs as CUDA graphs where UNSLOTH_DECODE_CUDA_GRAPHS is set (config.ENVIRONMENT_DEFAULTS).
        from unsloth import FastLanguageModel
        base, _ = FastLanguageModel.from_pretrained(model_name=base_path, dtype=None,
                                                    max_seq_length=trained.max_seq_length,
                                                    load_in_4bit=decide_load_in_4bit(trained.load_in_4bit, base_path)[0])
        model = attach_adapter(base, adapter_dir, base_name)
        FastLanguageModel.for_inference(model)
        return model, tokenizer, trained
    model = attach_adapter(load_causal_lm(base_path, dtype=inference_dtype("cpu")), adapter_dir, base_name)
    model.eval()
    return model, tokenizer, trained


def read_prompts(path) -> list[dict]:
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


def generate(model, tokenizer, prompts, *, prompt_format: str, generation: Generation, streamer=None,
             history=()) -> list[str]:
    """Answers to `prompts` (instructions, or {"instruction", "input"} dicts) in one batch, stopping at EOS.
    A prompt's optional "answer_start" is put at the start of the answer, which continues from it."""
    import torch
    torch.manual_seed(generation.seed)
    prompts = [{"instruction": p, "input": ""} if isinstance(p, str) else p for p in prompts]
    texts = [format_prompt(tokenizer, prompt_format, p["instruction"], input_text=p.get("input", ""), history=history)
             + p.get("answer_start", "") for p in prompts]
    # padded on the left: a decoder-only model continues each row from its last real token
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False).to(model.device)
    use_cpu_attention(model, batch["input_ids"].shape[1] + generation.max_new_tokens)
    sample = generation.temperature > 0
    # Unsloth's loader sets the context size as max_length; beside max_new_tokens it makes every call warn
    model.generation_config.max_length = None
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=generation.max_new_tokens, do_sample=sample,
                             temperature=generation.temperature if sample else None,
                             top_p=generation.top_p if sample else None,
                             repetition_penalty=generation.repetition_penalty, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, streamer=streamer)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [tokenizer.decode(t, skip_special_tokens=True).strip() for t in new_tokens]


def generate_batched(model, tokenizer, prompts, *, batch_size: int, prompt_format: str, generation: Generation,
                     progress: bool = True) -> list[str]:
    """`generate` over `prompts` in batches of `batch_size` (left-padded), with a progress bar."""
    from tqdm import tqdm
    answers = []
    with tqdm(total=len(prompts), desc="Answering", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            answers += generate(model, tokenizer, batch, prompt_format=prompt_format, generation=generation)
            bar.update(len(batch))
    return answers


def compare_answers(model, tokenizer, prompts, *, batch_size: int, prompt_format: str,
                    generation: Generation) -> list[dict]:
    """Rows of (prompt, base answer with the adapter off, tuned answer)."""
    options = dict(batch_size=batch_size, prompt_format=prompt_format, generation=generation)
    with model.disable_adapter():
        base = generate_batched(model, tokenizer, prompts, **options)
    tuned = generate_batched(model, tokenizer, prompts, **options)
    return [{**p, "base": b, "tuned": t} for p, b, t in zip(prompts, base, tuned)]


def prompt_text(prompt: dict) -> str:
    return f"{prompt['instruction']}\n\n{prompt['input']}" if prompt.get("input") else prompt["instruction"]


def side_by_side(rows: list[dict], width: int | None = None) -> str:
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


def compare_markdown(rows: list[dict], adapter_dir, base_name: str) -> str:
    """A markdown report: one table row per prompt with the base and the tuned answer."""
    def cell(text):
        return text.replace("|", "\\|").replace("\n", "<br>") or "(empty)"
    table = [f"| {cell(prompt_text(r))} | {cell(r['base'])} | {cell(r['tuned'])} |" for r in rows]
    return "\n".join(["# Base vs tuned", "", f"Base model: `{base_name}`; adapter: `{adapter_dir}`.", "",
                      "| prompt | base | tuned |", "|---|---|---|", *table, ""])


def write_jsonl(path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(model, tokenizer, *, prompt_format: str, generation: Generation, read_line=input) -> list[tuple[str, str]]:
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
        answer = generate(model, tokenizer, [line], prompt_format=prompt_format, generation=generation,
                          streamer=streamer, history=history)[0]
        history.append((line, answer))
    print()
    return history


def answer(s: AnswerSettings, *, device: str) -> None:
    """Step 03's modes: one prompt, a prompts file (answers written as JSONL), or a chat when neither is given.
    With `s.compare`, the base model (adapter off) and the tuned one side by side, also as a markdown table."""
    if s.compare and not (s.prompt or s.prompts_file):
        raise PromptsFileError("--compare needs --prompt or --prompts-file.")
    prompts = read_prompts(s.prompts_file) if s.prompts_file else [{"instruction": s.prompt, "input": ""}]
    model, tokenizer, trained = load_model_with_adapter(s.adapter_dir, model_name=s.model_name, device=device)
    options = dict(prompt_format=s.prompt_format or trained.prompt_format, generation=s.generation())
    run_dir = Path(s.adapter_dir).resolve().parent
    if s.compare:
        rows = compare_answers(model, tokenizer, prompts, batch_size=s.batch_size, **options)
        print(side_by_side(rows))
        report = Path(s.compare_file or run_dir / "compare.md")
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(compare_markdown(rows, s.adapter_dir, s.model_name or trained.model_name))
        print(f"\nComparison written to {report}")
    elif s.prompts_file:
        answers = generate_batched(model, tokenizer, prompts, batch_size=s.batch_size, **options)
        path = write_jsonl(s.answers_file or run_dir / "answers.jsonl",
                           [{**p, "answer": a} for p, a in zip(prompts, answers)])
        print(f"{len(answers)} answers written to {path}")
    elif s.prompt:
        print(f"\nPrompt: {s.prompt}\nAnswer: {generate(model, tokenizer, prompts, **options)[0]}")
    else:
        chat(model, tokenizer, **options)

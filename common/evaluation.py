"""Did the tune learn the papers, and keep what it knew? Base (adapter off) vs tuned, closed-book:
- question recall: plain questions about the papers' facts, asked in words no training record uses;
- cloze recall: a sentence of the paper with its fact blanked, primed up to the blank (memorised text);
- everyday questions kept: of those the base model answers right, the share the tuned one still answers right
  (beside it, how many each answers right in all: a tune can also learn some it did not know); and, smoother,
  the tuned model's loss on the base model's own answers to them (base: its own loss);
- held-out loss and perplexity on the test split.
Written to `<output_dir>/eval.md` (tables + chart), `eval.png` and `eval.json`.
"""
import difflib
import json
import math
from pathlib import Path

from .everyday import EVERYDAY_TEST
from .inference import generate_batched
from .knowledge import PLAIN_QUESTIONS_FILE, answered, fact_recalled, read_jsonl, read_questions, recall_score
from .settings import Generation
from .tokenizing import tokenize_rows
from .training import inference_dtype, mean_loss

# Greedy and without a repetition penalty, so that base and tuned are scored alike and repeatably.
FACT_GENERATION = Generation(max_new_tokens=16, temperature=0.0, top_p=1.0, repetition_penalty=1.0, seed=0)
QUESTION_GENERATION = Generation(max_new_tokens=48, temperature=0.0, top_p=1.0, repetition_penalty=1.0, seed=0)
# 64 tokens: room for a model that explains before it answers ("To find 7 times 8, ..."), base and tuned alike
EVERYDAY_GENERATION = Generation(max_new_tokens=64, temperature=0.0, top_p=1.0, repetition_penalty=1.0, seed=0)
BATCH_SIZE = 64  # rows generated at once: on 2 CPU cores, 64 rows a step give twice the tokens/s of 16


def _answers(model, tokenizer, prompts, prompt_format, generation):
    return generate_batched(model, tokenizer, prompts, batch_size=BATCH_SIZE, prompt_format=prompt_format,
                            generation=generation, progress=False)


def changed_materially(before: str, after: str, threshold: float = 0.5) -> bool:
    """Two answers differ materially when fewer than half of their characters line up."""
    return difflib.SequenceMatcher(None, before, after).ratio() < threshold


def _score(model, tokenizer, *, test_rows, cloze, plain, prompt_format, generation):
    loss = mean_loss(model, test_rows, tokenizer.pad_token_id) if test_rows else float("nan")
    cloze_prompts = [{"instruction": q["question"], "answer_start": q.get("answer_start", "")} for q in cloze]
    answers = _answers(model, tokenizer, cloze_prompts, prompt_format, generation)
    plain_answers = _answers(model, tokenizer, [q["question"] for q in plain], prompt_format, QUESTION_GENERATION)
    everyday = _answers(model, tokenizer, [q["question"] for q in EVERYDAY_TEST], prompt_format, EVERYDAY_GENERATION)
    return {"test_loss": loss, "test_perplexity": math.exp(loss) if loss == loss else float("nan"),
            "closed_book": recall_score(answers, cloze), "answers": answers,
            "question_recall": recall_score(plain_answers, plain), "plain_answers": plain_answers,
            "everyday": everyday, "everyday_right": [any(fact_recalled(a, form) for form in q["answers"])
                                                     for a, q in zip(everyday, EVERYDAY_TEST)]}


def _own_answer_loss(model, tokenizer, answers, prompt_format):
    """(base, tuned) mean loss on the base model's own answers to the everyday questions."""
    records = [{"instruction": q["question"], "input": "", "output": a} for q, a in zip(EVERYDAY_TEST, answers) if a]
    rows = tokenize_rows(records, tokenizer, prompt_format, 512).rows
    with model.disable_adapter():
        base = mean_loss(model, rows, tokenizer.pad_token_id)
    return base, mean_loss(model, rows, tokenizer.pad_token_id)


def evaluate_knowledge(model, tokenizer, *, test_rows: list[dict], questions: list[dict], prompt_format: str,
                       plain_questions: list[dict] = (), generation: Generation = FACT_GENERATION) -> dict:
    """Scores of the base model (adapter disabled) and of the tuned model (a PeftModel)."""
    options = dict(test_rows=test_rows, cloze=questions, plain=list(plain_questions), prompt_format=prompt_format,
                   generation=generation)
    model.eval()
    with model.disable_adapter():
        results = {"base": _score(model, tokenizer, **options)}
    results["tuned"] = _score(model, tokenizer, **options)
    base, tuned = results["base"], results["tuned"]
    known = [b for b in base["everyday_right"] if b]
    kept = sum(b and t for b, t in zip(base["everyday_right"], tuned["everyday_right"]))
    loss_base, loss_tuned = _own_answer_loss(model, tokenizer, base["everyday"], prompt_format)
    changed = [changed_materially(b, t) for b, t in zip(base["everyday"], tuned["everyday"])]
    results["forgetting"] = {"known_by_base": len(known), "kept": kept, "retention": kept / len(known) if known else 1.0,
                             "right_tuned": sum(tuned["everyday_right"]),
                             "own_answer_loss_base": loss_base, "own_answer_loss_tuned": loss_tuned,
                             "changed_share": sum(changed) / len(changed),
                             "questions": [q["question"] for q in EVERYDAY_TEST]}
    fresh = [i for i, q in enumerate(plain_questions) if not q.get("worded_as_trained")]
    for side in (base, results["tuned"]):  # recall on the questions no training record words (nearly) alike
        side["question_recall_new_wording"] = recall_score([side["plain_answers"][i] for i in fresh],
                                                           [plain_questions[i] for i in fresh])
    results["new_wording_questions"] = len(fresh)
    results["questions"] = questions
    results["plain_questions"] = list(plain_questions)
    return results


def knowledge_gained(results: dict, min_loss_drop: float = 0.05) -> bool:
    """True when the tuned model beats the base on both held-out loss and closed-book recall."""
    base, tuned = results["base"], results["tuned"]
    return tuned["test_loss"] < base["test_loss"] - min_loss_drop and tuned["closed_book"] > base["closed_book"]


def summary_line(results: dict) -> str:
    base, tuned, kept = results["base"], results["tuned"], results["forgetting"]
    return (f"Knowledge check: question recall {base['question_recall']:.0%} -> {tuned['question_recall']:.0%} "
            f"({len(results['plain_questions'])} questions; {tuned['question_recall_new_wording']:.0%} of the "
            f"{results['new_wording_questions']} worded unlike any training question); "
            f"cloze recall {base['closed_book']:.0%} -> "
            f"{tuned['closed_book']:.0%}; everyday answers kept {kept['kept']}/{kept['known_by_base']} "
            f"({kept['retention']:.0%}; {kept['right_tuned']} of {len(kept['questions'])} right in all, base "
            f"{kept['known_by_base']}); held-out perplexity {base['test_perplexity']:.2f} (base) -> "
            f"{tuned['test_perplexity']:.2f} (tuned)")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _answer_rows(questions, base_answers, tuned_answers, right, prefix=lambda q: ""):
    rows = []
    for q, b, t in zip(questions, base_answers, tuned_answers):
        marked = [("✓ " if right(a, q) else "") + prefix(q) + a for a in (b, t)]
        rows.append("| " + " | ".join(_cell(c) for c in [q["question"].split("\n")[-1], q["answer"], *marked]) + " |")
    return rows


def _plot(output_dir, base, tuned, forgetting):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    bars = ((axes[0], [base["question_recall"], tuned["question_recall"]], "question recall (higher is better)"),
            (axes[1], [base["closed_book"], tuned["closed_book"]], "cloze recall (higher is better)"),
            (axes[2], [base["test_perplexity"], tuned["test_perplexity"]], "held-out perplexity (lower is better)"))
    for ax, values, title in bars:
        ax.bar(["base", "tuned"], values, color=["#999999", "#3b7dd8"])
        ax.set_title(title, fontsize=9)
    axes[0].text(1, tuned["question_recall"], f"everyday kept {forgetting['retention']:.0%}", ha="center",
                 va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(output_dir / "eval.png", dpi=100)
    plt.close(fig)


def _epoch_lines(output_dir, epochs: list[dict]) -> list[str]:
    """eval_epochs.png (learning and forgetting losses by epoch) and its section of eval.md."""
    if not epochs:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    label = [f"{e['run']}.{e['epoch']}" if "run" in e else str(e["epoch"]) for e in epochs]  # MEAN_OF_RUNS: run.epoch
    ax.plot(label, [e["learning_loss"] for e in epochs], "o-", label="papers: validation questions (learning)")
    ax.plot(label, [e["forgetting_loss"] for e in epochs], "s-", label="everyday: base's own answers (forgetting)")
    ax.set_xlabel("epoch (run.epoch where several runs)")
    ax.set_ylabel("loss (nats per token)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(Path(output_dir) / "eval_epochs.png", dpi=100)
    plt.close(fig)
    best = {}
    for e in epochs:  # each run keeps its own best epoch
        if e.get("run") not in best or e["epoch_score"] > best[e.get("run")]["epoch_score"]:
            best[e.get("run")] = e
    return ["", "## Learning and forgetting by epoch", "", "![by epoch](eval_epochs.png)", "",
            "Loss on fact sentences asked by validation questions (not the questions above) and on the base model's "
            "own answers to everyday instructions held out of training, each epoch with the share of its update "
            "that ADAPTER_SCALE saves; the adapter kept is the epoch with the largest fall in the first less the "
            "rise in the second (with MEAN_OF_RUNS, each run's, then their mean update).", "",
            "| epoch | learning loss | forgetting loss | score | kept |", "|---|---|---|---|---|",
            *[f"| {name} | {e['learning_loss']:.3f} | {e['forgetting_loss']:.3f} | {e['epoch_score']:+.3f} | "
              f"{'yes' if best[e.get('run')] is e else ''} |" for name, e in zip(label, epochs)]]


def write_eval_report(output_dir, results: dict) -> Path:
    """eval.json, eval.png (bar chart) and eval.md (summary table + per-question answers)."""
    output_dir = Path(output_dir)
    base, tuned, forgetting = results["base"], results["tuned"], results["forgetting"]
    (output_dir / "eval.json").write_text(json.dumps(results, indent=2))
    _plot(output_dir, base, tuned, forgetting)
    plain, cloze = results["plain_questions"], results["questions"]
    lines = ["# Knowledge check", "", "![base vs tuned](eval.png)", "",
             *([f"Base and tuned both run in {results['dtype']}.", ""] if "dtype" in results else []),
             "| measure | base | tuned |", "|---|---|---|",
             f"| question recall ({len(plain)} plain questions, closed-book) | {base['question_recall']:.1%} | "
             f"{tuned['question_recall']:.1%} |",
             f"| of which the {results['new_wording_questions']} worded unlike any training question | "
             f"{base['question_recall_new_wording']:.1%} | {tuned['question_recall_new_wording']:.1%} |",
             f"| cloze recall ({len(cloze)} sentences, primed) | {base['closed_book']:.1%} | {tuned['closed_book']:.1%} |",
             f"| everyday questions answered right ({len(EVERYDAY_TEST)}) | {forgetting['known_by_base']} | "
             f"{forgetting['right_tuned']}, of which {forgetting['kept']} of the base's ({forgetting['retention']:.0%} "
             "kept) |",
             f"| loss on the base model's own everyday answers | {forgetting['own_answer_loss_base']:.3f} | "
             f"{forgetting['own_answer_loss_tuned']:.3f} |",
             f"| held-out loss (test split) | {base['test_loss']:.3f} | {tuned['test_loss']:.3f} |",
             f"| held-out perplexity | {base['test_perplexity']:.2f} | {tuned['test_perplexity']:.2f} |",
             "", "## Plain questions", "",
             f"Asked closed-book through the chat template; {len(results.get('held_out_questions', []))} more ask "
             "about facts of the test split's sections only, which no tune can know, and are left out.", "",
             "| question | reference | base | tuned |", "|---|---|---|---|",
             *_answer_rows(plain, base["plain_answers"], tuned["plain_answers"], lambda a, q: answered(a, q)),
             "", "## Cloze sentences", "", "| sentence | reference | base | tuned |", "|---|---|---|---|",
             *_answer_rows(cloze, base["answers"], tuned["answers"], lambda a, q: answered(a, q),
                           prefix=lambda q: q.get("answer_start", "") + " " if q.get("answer_start") else ""),
             "", "## Everyday questions (forgetting)", "", "| question | accepted | base | tuned |",
             "|---|---|---|---|"]
    for q, b, t, rb, rt in zip(EVERYDAY_TEST, base["everyday"], tuned["everyday"], base["everyday_right"],
                               tuned["everyday_right"]):
        cells = [q["question"], " / ".join(q["answers"]), ("✓ " if rb else "") + b, ("✓ " if rt else "") + t]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += _epoch_lines(output_dir, results.get("epochs", []))
    path = output_dir / "eval.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def in_inference_dtype(model):
    """A CPU model in training.inference_dtype (02's fp32 tune becomes bf16 where this CPU runs bf16 fast) as 03 loads
    a saved adapter: the base's weights cast, its buffers (RoPE's frequencies) and the LoRA weights left in fp32, so
    that 02's check and 03 --evaluate score an adapter alike. A GPU model is left as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    if model.device.type != "cpu" or model.dtype == (dtype := inference_dtype("cpu")):  # no CPU timing on a GPU
        return model
    adapter = {id(p) for layer in model.modules() if isinstance(layer, BaseTunerLayer)
               for name in layer.adapter_layer_names for p in getattr(layer, name).parameters()}
    for p in model.parameters():  # not model.to(dtype): that rounds the buffers and the LoRA weights too
        if id(p) not in adapter:
            p.data = p.data.to(dtype)
    return model


def knowledge_check(model, tokenizer, *, test_rows: list[dict], dataset_dir, prompt_format: str, output_dir,
                    epochs: list[dict] = ()) -> dict:
    """Evaluate, write eval.md/png/json into `output_dir`, print the one-line summary; returns the results.
    `epochs`: the losses of each epoch that chose the one kept (common/selection.py), charted in eval.md.
    On a CPU the model is checked in training.inference_dtype (in_inference_dtype)."""
    model = in_inference_dtype(model)
    plain = read_jsonl(Path(dataset_dir) / PLAIN_QUESTIONS_FILE)
    results = evaluate_knowledge(model, tokenizer, test_rows=test_rows, questions=read_questions(dataset_dir),
                                 plain_questions=[q for q in plain if q.get("trained", True)],
                                 prompt_format=prompt_format)
    results["held_out_questions"] = [q for q in plain if not q.get("trained", True)]  # test-section facts
    results["epochs"] = list(epochs)
    results["dtype"] = str(model.dtype).removeprefix("torch.")
    print(f"{summary_line(results)}; report: {write_eval_report(output_dir, results)}")
    return results


def evaluate_adapter(adapter_dir, *, dataset_dir, model_name: str | None = None, prompt_format: str | None = None,
                     device: str = "cpu") -> dict:
    """03 --evaluate: the knowledge check of a saved adapter; the report goes next to the adapter."""
    from .dataset import load_dataset_dir
    from .inference import load_model_with_adapter
    model, tokenizer, trained = load_model_with_adapter(adapter_dir, model_name=model_name, device=device)
    prompt_format = prompt_format or trained.prompt_format
    test = tokenize_rows(load_dataset_dir(dataset_dir)["test"], tokenizer, prompt_format, trained.max_seq_length)
    return knowledge_check(model, tokenizer, test_rows=test.rows, dataset_dir=dataset_dir,
                           prompt_format=prompt_format, output_dir=Path(adapter_dir).resolve().parent)

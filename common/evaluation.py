"""Did the tune learn the papers? Base vs tuned: held-out perplexity, closed-book recall, forgetting.

Written to `<output_dir>/eval.md` (table + bar chart) and `eval.json`.
"""
import difflib
import json
import math
from pathlib import Path

from .inference import generate
from .knowledge import GENERAL_PROMPTS, fact_recalled, read_questions, recall_score
from .training import mean_loss


def _answers(model, tokenizer, prompts, prompt_format, max_new_tokens, batch_size=16):
    out = []
    for start in range(0, len(prompts), batch_size):
        out += generate(model, tokenizer, prompts[start:start + batch_size], prompt_format,
                        max_new_tokens=max_new_tokens, repetition_penalty=1.0)
    return out


def changed_materially(before, after, threshold=0.5):
    """Two answers differ materially when fewer than half of their characters line up."""
    return difflib.SequenceMatcher(None, before, after).ratio() < threshold


def _score(model, tokenizer, test_rows, prompts, questions, prompt_format, max_new_tokens):
    loss = mean_loss(model, test_rows, tokenizer.pad_token_id) if test_rows else float("nan")
    answers = _answers(model, tokenizer, prompts, prompt_format, max_new_tokens)
    return {"test_loss": loss, "test_perplexity": math.exp(loss) if loss == loss else float("nan"),
            "closed_book": recall_score(answers, questions), "answers": answers,
            "general": _answers(model, tokenizer, GENERAL_PROMPTS, prompt_format, 48)}


def evaluate_knowledge(model, tokenizer, test_rows, questions, prompt_format, max_new_tokens=16):
    """Scores of the base model (adapter disabled) and of the tuned model (a PeftModel)."""
    prompts = [{"instruction": q["question"], "answer_start": q.get("answer_start", "")} for q in questions]
    args = (tokenizer, test_rows, prompts, questions, prompt_format, max_new_tokens)
    model.eval()
    with model.disable_adapter():
        results = {"base": _score(model, *args)}
    results["tuned"] = _score(model, *args)
    changed = [changed_materially(b, t) for b, t in zip(results["base"]["general"], results["tuned"]["general"])]
    results["forgetting"] = {"changed_share": sum(changed) / len(changed), "prompts": GENERAL_PROMPTS}
    results["questions"] = questions
    return results


def knowledge_gained(results, min_loss_drop=0.05):
    """True when the tuned model beats the base on both held-out loss and closed-book recall."""
    base, tuned = results["base"], results["tuned"]
    return tuned["test_loss"] < base["test_loss"] - min_loss_drop and tuned["closed_book"] > base["closed_book"]


def summary_line(results):
    base, tuned = results["base"], results["tuned"]
    return (f"Knowledge check: held-out perplexity {base['test_perplexity']:.2f} (base) -> "
            f"{tuned['test_perplexity']:.2f} (tuned); closed-book recall {base['closed_book']:.0%} -> "
            f"{tuned['closed_book']:.0%}; general answers changed: {results['forgetting']['changed_share']:.0%}")


def write_eval_report(output_dir, results):
    """eval.json, eval.png (bar chart) and eval.md (summary table + per-question answers)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    output_dir = Path(output_dir)
    base, tuned = results["base"], results["tuned"]
    (output_dir / "eval.json").write_text(json.dumps(results, indent=2))
    fig, axes = plt.subplots(1, 2, figsize=(7, 3))
    for ax, key, title in ((axes[0], "test_perplexity", "held-out perplexity (lower is better)"),
                           (axes[1], "closed_book", "closed-book recall (higher is better)")):
        ax.bar(["base", "tuned"], [base[key], tuned[key]], color=["#999999", "#3b7dd8"])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output_dir / "eval.png", dpi=100)
    plt.close(fig)
    lines = ["# Knowledge check", "", "![base vs tuned](eval.png)", "",
             "| measure | base | tuned |", "|---|---|---|",
             f"| held-out loss (test split) | {base['test_loss']:.3f} | {tuned['test_loss']:.3f} |",
             f"| held-out perplexity | {base['test_perplexity']:.2f} | {tuned['test_perplexity']:.2f} |",
             f"| closed-book recall ({len(results['questions'])} questions) | {base['closed_book']:.1%} | "
             f"{tuned['closed_book']:.1%} |",
             f"| general prompts answered materially differently | - | "
             f"{results['forgetting']['changed_share']:.0%} |", "",
             "## Closed-book questions", "", "| question | reference | base | tuned |", "|---|---|---|---|"]
    for q, b, t in zip(results["questions"], base["answers"], tuned["answers"]):
        start = q.get("answer_start", "") + " " if q.get("answer_start") else ""
        cells = [q["question"].split("\n")[-1], q["answer"], ("✓ " if fact_recalled(b, q["answer"]) else "") + start + b,
                 ("✓ " if fact_recalled(t, q["answer"]) else "") + start + t]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += ["", "## General prompts (forgetting)", "", "| prompt | base | tuned |", "|---|---|---|"]
    for p, b, t in zip(GENERAL_PROMPTS, base["general"], tuned["general"]):
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in (p, b, t)) + " |")
    path = output_dir / "eval.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def knowledge_check(model, tokenizer, test_rows, dataset_dir, prompt_format, output_dir):
    """Evaluate, write eval.md/png/json into `output_dir`, print the one-line summary; returns the results."""
    results = evaluate_knowledge(model, tokenizer, test_rows, read_questions(dataset_dir), prompt_format)
    print(f"{summary_line(results)}; report: {write_eval_report(output_dir, results)}")
    return results


def evaluate_adapter(adapter_dir, dataset_dir, model_name=None, prompt_format=None, device="cpu"):
    """03 --evaluate: the knowledge check of a saved adapter; the report goes next to the adapter."""
    from .dataset import load_dataset_dir
    from .inference import load_model_with_adapter
    from .training import tokenize_rows
    model, tokenizer, trained = load_model_with_adapter(adapter_dir, model_name, device)
    prompt_format = prompt_format or trained.get("PROMPT_FORMAT", "chat")
    test = tokenize_rows(load_dataset_dir(dataset_dir)["test"], tokenizer, prompt_format,
                         trained.get("MAX_SEQ_LENGTH", 1024))
    return knowledge_check(model, tokenizer, test.rows, dataset_dir, prompt_format, Path(adapter_dir).resolve().parent)

"""Human-readable outputs: the training report (markdown) and its loss curve (PNG)."""
import json
from pathlib import Path

from .config import redact
from .distributed import main_process_only


def plot_loss(history, path):
    """Train (and eval) loss against step, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss (test split)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@main_process_only
def write_training_report(output_dir, settings, facts, history):
    """`<output_dir>/report.md` with the settings, counts, speed and loss curve. Never holds HF_TOKEN."""
    output_dir = Path(output_dir)
    png = plot_loss(history, output_dir / "loss.png")
    lines = ["# Fine-tuning report", "", f"![loss curve]({png.name})", "", "## Results", "",
             "| what | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=2, default=str), "```", ""]
    path = output_dir / "report.md"
    path.write_text(redact("\n".join(lines)), encoding="utf-8")
    return path

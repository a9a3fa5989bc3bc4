"""Human-readable outputs of a run: its summary (counts, batch, losses, speed, memory), the training report
(markdown) and its loss curve (PNG)."""
import json
import statistics
from pathlib import Path

from .config import redact
from .distributed import main_process_only
from .settings import TrainSettings
from .tokenizing import TokenizedData


def effective_batch(s: TrainSettings, processes: int = 1) -> dict:
    """Rows per optimizer step (with a BATCH_TOKENS budget: padded tokens at most; with BATCH_TOKENS -1: rows on
    average): per device x accumulation x processes."""
    per_device, unit = (s.batch_tokens, "padded tokens per step, at most") if s.batch_tokens > 0 \
        else (s.batch_size, "rows per step, on average" if s.batch_tokens else "rows per step")
    key = f"effective batch ({unit})"
    return {key: f"{per_device * s.gradient_accumulation_steps * processes} = {per_device} per device x "
                 f"{s.gradient_accumulation_steps} accumulated x {processes} process(es)"}


def run_summary(train: TokenizedData, test: TokenizedData, history: list[dict], *, device: str, s: TrainSettings,
                processes: int = 1) -> dict:
    """The numbers a person wants from a run: counts, batch, losses, tokens, speed, memory."""
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = max([h.get("tokens", 0) for h in history] or [0])
    wall = sum(h.get("wall_s", 0) for h in history)
    facts = {"device": device, "training": s.training_mode + (f", from {s.init_adapter}" if s.init_adapter else ""),
             "train rows": len(train.rows), "test rows": len(test.rows),
             "rows cut at MAX_SEQ_LENGTH": train.n_truncated + test.n_truncated,
             "longest row (tokens)": max(train.longest, test.longest),
             **effective_batch(s, processes),
             "optimizer steps": max([h.get("step", 0) for h in history] or [0]),
             "first train loss": losses[0] if losses else None, "last train loss": losses[-1] if losses else None,
             "eval loss (test split)": evals[-1] if evals else None, "wall time (s)": wall}
    if tokens:
        facts.update({"tokens seen": tokens, "tokens/s": tokens / wall if wall else None})
    peak = [h["peak_gpu_memory_gib"] for h in history if "peak_gpu_memory_gib" in h]
    if peak:
        facts["peak GPU memory (GiB)"] = peak[-1]
        facts.update(gpu_facts(history))
    else:
        import resource
        facts["peak memory (GiB, process)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return facts


def gpu_facts(history: list[dict]) -> dict:
    """The GPU run's gradient checkpointing (which ran, and why) and its FLOPs utilisation against the card's dense
    16-bit peak, the median over the logged steps: model FLOPs (4N a token for the frozen base, 6 x the LoRA
    weights, attention) and hardware FLOPs (with the forward that checkpointing runs again, 2N more)."""
    facts = {"gradient checkpointing": h["gradient_checkpointing"] for h in history if "gradient_checkpointing" in h}
    for key, name in (("train_mfu", "model FLOPs utilisation"), ("train_hfu", "hardware FLOPs utilisation")):
        values = [h[key] for h in history if key in h]
        if values:
            facts[name] = f"{statistics.median(values):.1%}"
    return facts


def plot_loss(history: list[dict], path) -> Path:
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
def write_training_report(settings: TrainSettings, facts: dict, history: list[dict]) -> Path:
    """`<output_dir>/report.md` with the settings, counts, speed and loss curve. Never holds HF_TOKEN."""
    output_dir = Path(settings.output_dir)
    png = plot_loss(history, output_dir / "loss.png")
    lines = ["# Fine-tuning report", "", f"![loss curve]({png.name})", "", "## Results", "",
             "| what | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Settings", "", "```json", json.dumps(settings.as_dict(), indent=2), "```", ""]
    path = output_dir / "report.md"
    path.write_text(redact("\n".join(lines)), encoding="utf-8")
    return path

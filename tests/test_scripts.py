"""The three scripts, run as a user runs them, on the sample paper with the embedded model."""
import json
import subprocess
import sys

from datasets import load_from_disk
from peft import PeftConfig

from tests.conftest import ROOT


def run(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**__import__("os").environ, "HF_TOKEN": "hf_never_printed"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "hf_never_printed" not in result.stdout + result.stderr
    return result.stdout


def test_the_demo_learns_the_paper(tmp_path):
    """The three steps with the demo's own settings: the tuned model must know the paper better than the base,
    by margins that a broken pipeline (labels all masked, adapter not applied: tuned == base) cannot reach."""
    out = run("01_create_dataset.py", "--md-dir", str(tmp_path / "md"), "--dataset-dir", str(tmp_path / "ds"),
              "--converter", "auto")
    assert "text-layer converter" in out and (tmp_path / "md" / "sample_paper.md").exists()
    assert (tmp_path / "ds" / "questions.jsonl").read_text().count("____") >= 30
    assert len(load_from_disk(str(tmp_path / "ds"))["train"]) > 10
    out = run("02_fine_tuning.py", "--dataset-dir", str(tmp_path / "ds"), "--output-dir", str(tmp_path / "run"))
    assert "Knowledge check: held-out perplexity" in out
    adapter = tmp_path / "run" / "adapter"
    assert PeftConfig.from_pretrained(str(adapter)).peft_type == "LORA"
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "loss.png").exists()
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    base, tuned = results["base"], results["tuned"]
    assert tuned["test_perplexity"] < 0.85 * base["test_perplexity"]
    assert tuned["closed_book"] >= base["closed_book"] + 0.07  # at least 3 more of ~40 facts recalled
    assert "| closed-book recall" in (tmp_path / "run" / "eval.md").read_text()
    out = run("03_using_the_model.py", "--adapter-dir", str(adapter), "--max-new-tokens", "8",
              "--prompt", "What is the Velmora tidal-lichen?")
    assert "Answer:" in out


def test_missing_dataset_fails_with_a_clear_message(tmp_path):
    result = subprocess.run([sys.executable, "02_fine_tuning.py", "--dataset-dir", str(tmp_path / "none")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "run 01_create_dataset.py first" in result.stderr

"""Several processes: with a launcher's environment variables set, only the main process writes and prints."""
import subprocess
import sys

import pytest

from common.distributed import check_launch, is_main_process, main_process_only, say
from common.errors import LaunchError
from common.report import run_summary, write_training_report
from common.settings import TrainSettings
from common.tokenizing import TokenizedData, tokenize_cached
from tests.conftest import ROOT

LAUNCHED_RANK_1 = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}


def test_only_the_main_process_writes(monkeypatch, tmp_path):
    history = [{"step": 1, "loss": 2.0}]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    settings = TrainSettings.defaults(output_dir=str(tmp_path))
    assert not is_main_process()
    assert write_training_report(settings, {"a": 1}, history) is None
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    assert write_training_report(settings, {"a": 1}, history).exists()
    assert main_process_only(lambda: "ran")() == "ran"


def test_other_processes_are_quiet(monkeypatch, capsys):
    for name, value in LAUNCHED_RANK_1.items():
        monkeypatch.setenv(name, value)
    say("hidden")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    say("shown")
    assert capsys.readouterr().out == "shown\n"


def test_several_processes_need_gpus(monkeypatch):
    for name, value in LAUNCHED_RANK_1.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(LaunchError, match="need one CUDA GPU each"):
        check_launch("cpu")
    with pytest.raises(LaunchError, match="has no GPU: this machine has 1"):
        check_launch("cuda", gpu_count=1)
    check_launch("cuda", gpu_count=2)


def test_tokenized_once_then_read_by_the_others(monkeypatch, tmp_path, tokenizer):
    records = [{"instruction": "Who founded the station?", "input": "", "output": "Ilse Marrow."}]
    cache = tmp_path / "tokenized" / "train.json"
    options = dict(responses_only=True, cache_file=cache)
    tokenize_cached(records, tokenizer, "chat", 256, **options)
    assert not cache.exists()  # one process: nothing to share
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    first = tokenize_cached(records, tokenizer, "chat", 256, **options)
    assert cache.exists()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr("common.tokenizing.tokenize_rows", lambda *a, **k: pytest.fail("tokenized twice"))
    assert tokenize_cached(records, tokenizer, "chat", 256, **options).rows == first.rows


def test_the_report_records_the_effective_batch():
    s = TrainSettings.defaults(batch_size=4, gradient_accumulation_steps=2, batch_tokens=0)
    facts = run_summary(TokenizedData([]), TokenizedData([]), [{"step": 3, "loss": 1.0}], device="cuda", s=s,
                        processes=2)
    assert facts["effective batch (rows per step)"].startswith("16 = 4 per device x 2 accumulated x 2 process")


def test_the_cpu_path_refuses_several_processes(tmp_path):
    env = {**__import__("os").environ, **LAUNCHED_RANK_1, "RANK": "0", "LOCAL_RANK": "0"}
    result = subprocess.run([sys.executable, "02_fine_tuning.py", "--device", "cpu", "--output-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "need one CUDA GPU each" in result.stderr

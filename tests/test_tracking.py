"""REPORT_TO: the trackers' checks before training (W&B and Trackio cannot log in from here, so their failures are
what is tested), and the CPU loop's TensorBoard events, written by a real run and read back."""
import os
import subprocess
import sys

import pytest
from peft import get_peft_model

from common.errors import SettingsError
from common.models import load_causal_lm
from common.settings import TrainSettings
from common.tokenizing import tokenize_rows
from common.tracking import check_tracking, report_targets, tracking_environment, wandb_logged_in
from common.training import lora_config, train_model
from tests.conftest import ROOT

RECORDS = [{"instruction": "Who founded Kesterhaven Intertidal Station?", "input": "",
            "output": "Ilse Marrow founded it in 1987."}]
W_AND_B = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL")


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    """No W&B key, mode or login (an empty netrc) in this test, whatever the machine has."""
    for name in W_AND_B:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    env_file = ROOT / ".env"
    if env_file.exists() and any(line.startswith("WANDB_API_KEY=") for line in env_file.read_text().splitlines()):
        pytest.skip("this checkout's .env holds a W&B key")
    return tmp_path / "netrc"


def test_report_to_is_none_or_a_comma_list_of_known_trackers():
    assert report_targets("none") == [] and report_targets("") == []
    assert report_targets("tensorboard, wandb,tensorboard") == ["tensorboard", "wandb"]
    with pytest.raises(SettingsError, match="REPORT_TO must be none, or tensorboard, wandb and/or trackio"):
        report_targets("tensorboard,mlflow")


@pytest.mark.parametrize("tracker", ["wandb", "trackio", "tensorboard"])
def test_a_missing_tracker_package_says_what_to_install(monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # as where it is not installed
    with pytest.raises(SettingsError, match=f"needs {tracker}: pip install {tracker} \\(or set --report-to none\\)"):
        check_tracking(f"tensorboard,{tracker}" if tracker != "tensorboard" else "tensorboard")


def test_wandb_without_a_login_says_what_to_set_and_never_prints_the_key(monkeypatch, tmp_path, no_wandb_login,
                                                                         capsys):
    (tmp_path / "wandb").mkdir()  # an installed wandb, as far as the check can tell (it imports nothing)
    (tmp_path / "wandb" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SettingsError, match="W&B has no login here: set WANDB_API_KEY .* run `wandb login`"):
        check_tracking("wandb")
    no_wandb_login.write_text("machine api.wandb.ai\n  login user\n  password wandb-netrc-key-123\n")
    assert wandb_logged_in()  # `wandb login` wrote the netrc
    no_wandb_login.write_text("")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_logged_in()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-key-456")
    assert check_tracking("wandb") == ["wandb"]
    assert "wandb-secret-key-456" not in capsys.readouterr().out


def test_tracking_environment_points_the_gpu_callbacks_at_the_runs_folder_and_puts_it_back(monkeypatch, tmp_path):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    with tracking_environment(tmp_path):
        assert os.environ["TENSORBOARD_LOGGING_DIR"].startswith(str(tmp_path / "runs"))
        assert os.environ["WANDB_PROJECT"] == "mine"  # the user's value wins
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ and os.environ["WANDB_PROJECT"] == "mine"


def test_the_cpu_loop_writes_its_scalars_to_tensorboard(embedded_path, tokenizer, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    rows = tokenize_rows(RECORDS, tokenizer, "chat", 128).rows
    settings = TrainSettings.defaults(output_dir=str(tmp_path), report_to="tensorboard", max_steps=2, eval_steps=1,
                                      save_steps=0, warmup_steps=1, batch_tokens=0, learning_rate=2e-3)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    history = train_model(model, tokenizer, rows, settings, device="cpu", eval_rows=rows)
    [run] = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    read = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    logged = {"train/loss": "loss", "train/learning_rate": "learning_rate", "train/tokens_per_s": "tokens_per_s",
              "eval/loss": "eval_loss"}
    assert set(read) == set(logged)
    for tag, key in logged.items():
        expected = [(h["step"], h[key]) for h in history if key in h]
        assert len(read[tag]) == len(expected) >= 2
        assert [step for step, _ in read[tag]] == [step for step, _ in expected]
        assert [value for _, value in read[tag]] == pytest.approx([value for _, value in expected], rel=1e-5)


# 02 as a user runs it, where the tracker's package is not installed: the check must stop it before any training.
WITHOUT_TRACKIO = """
import runpy, sys
sys.modules["trackio"] = None
sys.argv = ["02_fine_tuning.py", *sys.argv[1:]]
runpy.run_path("02_fine_tuning.py", run_name="__main__")
"""


def test_02_without_the_trackers_package_stops_before_training_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TRACKIO, "--report-to", "trackio", "--output-dir",
                             str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("Error: REPORT_TO=trackio needs trackio: pip install trackio "
                                     "(or set --report-to none).")
    assert not (tmp_path / "run").exists()

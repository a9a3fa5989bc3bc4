import subprocess
import sys

import pytest

from common.config import apply_cli_overrides, build_parser, read_constant_comments, redact
from tests.conftest import ROOT

SCRIPTS = ["01_create_dataset.py", "02_fine_tuning.py", "03_using_the_model.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_constant_has_a_comment_and_an_option_in_help(script):
    comments = read_constant_comments(ROOT / script)
    assert len(comments) >= 5
    assert all(comments.values()), f"constants without a comment in {script}"
    help_text = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    for name in comments:
        assert "--" + name.lower().replace("_", "-") in help_text


def _namespace(tmp_path):
    script = tmp_path / "script.py"
    script.write_text('MAX_STEPS = -1  # steps\nPUSH_TO_HUB = False  # push\nNAME = "a"  # name\n'
                      'MODULES = ["q", "k"]  # modules\nOPTIONAL = None  # optional\n')
    return {"__file__": str(script), "MAX_STEPS": -1, "PUSH_TO_HUB": False, "NAME": "a", "MODULES": ["q", "k"],
            "OPTIONAL": None}


def test_overrides_use_kebab_case_and_keep_types(tmp_path):
    ns = _namespace(tmp_path)
    apply_cli_overrides(ns, ["--max-steps", "20", "--push-to-hub", "--name", "b", "--modules", "x", "y",
                             "--optional", "3"])
    assert ns["MAX_STEPS"] == 20 and ns["PUSH_TO_HUB"] is True and ns["NAME"] == "b"
    assert ns["MODULES"] == ["x", "y"] and ns["OPTIONAL"] == 3


def test_booleans_can_be_turned_off_and_defaults_stay(tmp_path):
    ns = _namespace(tmp_path)
    ns["PUSH_TO_HUB"] = True
    apply_cli_overrides(ns, ["--no-push-to-hub"])
    assert ns["PUSH_TO_HUB"] is False and ns["MAX_STEPS"] == -1


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        build_parser(_namespace(tmp_path)).parse_args(["--not-a-constant", "1"])


def test_redact_hides_the_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret123")
    assert "hf_secret123" not in redact("failed with token hf_secret123")

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

import pytest

from common.config import (ENVIRONMENT_DEFAULTS, build_parser, parse_settings, read_constant_comments,
                           read_script_constants, redact, set_environment_defaults, settings_from_constants)
from common.errors import SettingsError
from common.settings import AnswerSettings, DatasetSettings, TrainSettings
from tests.conftest import ROOT

SCRIPTS = {"01_create_dataset.py": DatasetSettings, "02_fine_tuning.py": TrainSettings,
           "03_using_the_model.py": AnswerSettings}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_constant_has_a_comment_and_an_option_in_help(script):
    comments = read_constant_comments(ROOT / script)
    assert len(comments) >= 5
    assert all(comments.values()), f"constants without a comment in {script}"
    help_text = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    for name in comments:
        assert "--" + name.lower().replace("_", "-") in help_text


@pytest.mark.parametrize("script, settings_class", SCRIPTS.items())
def test_the_script_constants_are_the_settings_defaults(script, settings_class):
    constants = read_script_constants(ROOT / script)
    settings = settings_class.defaults()
    assert {name.lower() for name in constants} == set(settings.as_dict())
    for name, value in constants.items():
        assert getattr(settings, name.lower()) == value, name


@dataclass(frozen=True, kw_only=True)
class Example:
    max_steps: int
    push_to_hub: bool
    name: str
    modules: list[str]
    optional: Optional[int]
    rate: float


def _namespace(tmp_path):
    script = tmp_path / "script.py"
    script.write_text('MAX_STEPS = -1  # steps\nPUSH_TO_HUB = False  # push\nNAME = "a"  # name\n'
                      'MODULES = ["q", "k"]  # modules\nOPTIONAL = None  # optional\nRATE = 1  # rate\n')
    return {"__file__": str(script), **read_script_constants(script)}


def test_overrides_use_kebab_case_and_keep_types(tmp_path):
    s = parse_settings(Example, _namespace(tmp_path), ["--max-steps", "20", "--push-to-hub", "--name", "b",
                                                        "--modules", "x", "y", "--optional", "3", "--rate", "0.5"])
    assert s == Example(max_steps=20, push_to_hub=True, name="b", modules=["x", "y"], optional=3, rate=0.5)


def test_list_options_take_words_or_commas_and_the_default_stays_whole(tmp_path):
    ns = {**_namespace(tmp_path), "MODULES": ["a, b"]}  # a constant's own comma is its text, not a separator
    assert parse_settings(Example, ns, ["--modules", "x,y", "z", "w,"]).modules == ["x", "y", "z", "w"]
    assert parse_settings(Example, ns, []).modules == ["a, b"]
    assert parse_settings(Example, ns, ["--modules"]).modules == []


def test_booleans_can_be_turned_off_and_defaults_stay(tmp_path):
    ns = {**_namespace(tmp_path), "PUSH_TO_HUB": True}
    s = parse_settings(Example, ns, ["--no-push-to-hub"])
    assert s.push_to_hub is False and s.max_steps == -1 and s.rate == 1.0 and isinstance(s.rate, float)


def test_unknown_option_is_refused(tmp_path):
    settings = parse_settings(Example, _namespace(tmp_path), [])
    with pytest.raises(SystemExit):
        build_parser(settings, {}).parse_args(["--not-a-constant", "1"])


def test_a_mistyped_or_missing_constant_names_itself():
    good = {"MAX_STEPS": 1, "PUSH_TO_HUB": False, "NAME": "a", "MODULES": [], "OPTIONAL": None, "RATE": 0.1}
    with pytest.raises(SettingsError, match=r"MAX_STEPS \(my.py\) must be a whole number, not '20'"):
        settings_from_constants(Example, {**good, "MAX_STEPS": "20"}, where="my.py")
    with pytest.raises(SettingsError, match="PUSH_TO_HUB .* must be True or False, not 1"):
        settings_from_constants(Example, {**good, "PUSH_TO_HUB": 1}, where="my.py")
    with pytest.raises(SettingsError, match=r"missing \['RATE'\], unknown \['RATES'\]"):
        settings_from_constants(Example, {**{k: v for k, v in good.items() if k != "RATE"}, "RATES": 1})


def test_a_typo_in_a_script_constant_fails_with_one_line(tmp_path):
    script = tmp_path / "01_create_dataset.py"
    script.write_text((ROOT / "01_create_dataset.py").read_text().replace("SEED = 42", 'SEED = "42"'))
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "Error: SEED (01_create_dataset.py) must be a whole number, not '42'."


def test_environment_defaults_leave_the_users_values(monkeypatch):
    name = next(iter(ENVIRONMENT_DEFAULTS))
    monkeypatch.setenv(name, "0")
    set_environment_defaults()
    assert os.environ[name] == "0"
    monkeypatch.delenv(name)
    set_environment_defaults()
    assert os.environ[name] == ENVIRONMENT_DEFAULTS[name]


def test_redact_hides_the_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret123")
    assert "hf_secret123" not in redact("failed with token hf_secret123")


def test_redact_hides_the_wandb_key_too(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb_secret456")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert redact("init failed: key wandb_secret456") == "init failed: key ***"

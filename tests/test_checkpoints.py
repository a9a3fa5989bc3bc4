"""Which checkpoint 02 resumes from: the latest one, only where it was trained with the same settings and rows."""
from common.checkpoints import SET_ASIDE, run_identity
from common.settings import TrainSettings
from common.training import resume_checkpoint

ROWS = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]


def _checkpoints(tmp_path, s, rows, steps=(2, 4)):
    """A folder as an interrupted run leaves it: its checkpoints and what they were trained with."""
    assert resume_checkpoint(tmp_path, True, run_identity(s, rows)) is None  # nothing yet: a fresh start, recorded
    for step in steps:
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)


def test_the_same_settings_and_rows_resume_from_the_latest_checkpoint(tmp_path, capsys):
    s = TrainSettings.defaults(output_dir=str(tmp_path))
    _checkpoints(tmp_path, s, ROWS)
    # where it is written, logged or evaluated is no reason to start over
    same = s.replace(logging_steps=5, evaluate=False, save_steps=20, report_to="tensorboard")
    assert resume_checkpoint(tmp_path, True, run_identity(same, ROWS)) == tmp_path / "checkpoints" / "checkpoint-4"
    assert "resuming" in capsys.readouterr().out


def test_other_settings_or_rows_start_over_and_set_the_old_checkpoints_aside(tmp_path, capsys):
    s = TrainSettings.defaults(output_dir=str(tmp_path))
    _checkpoints(tmp_path, s, ROWS)
    assert resume_checkpoint(tmp_path, True, run_identity(s.replace(lora_r=8, learning_rate=1e-3), ROWS)) is None
    out = capsys.readouterr().out
    assert "LORA_R 32 -> 8" in out and "LEARNING_RATE -1.0 -> 0.001" in out and str(tmp_path / SET_ASIDE) in out
    assert (tmp_path / SET_ASIDE / "checkpoint-4").is_dir()  # kept, not deleted
    assert not (tmp_path / "checkpoints" / "checkpoint-4").exists()
    (tmp_path / "checkpoints" / "checkpoint-2").mkdir()  # the new run's own checkpoint resumes with its settings
    assert resume_checkpoint(tmp_path, True, run_identity(s.replace(lora_r=8, learning_rate=1e-3), ROWS)) == \
        tmp_path / "checkpoints" / "checkpoint-2"
    assert resume_checkpoint(tmp_path, True, run_identity(s.replace(lora_r=8, learning_rate=1e-3), ROWS[:1])) is None
    assert "the training rows" in capsys.readouterr().out


def test_no_resume_removes_the_checkpoints(tmp_path, capsys):
    s = TrainSettings.defaults(output_dir=str(tmp_path))
    _checkpoints(tmp_path, s, ROWS)
    assert resume_checkpoint(tmp_path, False, run_identity(s, ROWS)) is None
    assert not (tmp_path / "checkpoints" / "checkpoint-4").exists() and "--no-resume" in capsys.readouterr().out

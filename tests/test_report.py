from common.report import write_training_report
from common.settings import TrainSettings


def test_report_has_curve_settings_and_no_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_topsecret")
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 2, "eval_loss": 2.7}]
    settings = TrainSettings.defaults(output_dir=str(tmp_path), lora_r=16, hub_model_id="token hf_topsecret")
    path = write_training_report(settings, {"tokens/s": 123.4}, history)
    text = path.read_text()
    assert "![loss curve](loss.png)" in text and '"lora_r": 16' in text and "123.4" in text
    assert "hf_topsecret" not in text
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"

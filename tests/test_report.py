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


def test_summary_says_the_batch_the_checkpointing_and_the_flops_utilisation():
    from common.report import effective_batch, gpu_facts
    settings = TrainSettings.defaults(batch_size=4, batch_tokens=-1, gradient_accumulation_steps=2)
    assert effective_batch(settings, 1) == {"effective batch (rows per step, on average)": "8 = 4 per device x 2 "
                                                                                          "accumulated x 1 process(es)"}
    history = [{"step": 1, "loss": 3.0, "train_mfu": 0.20, "train_hfu": 0.20},
               {"step": 2, "loss": 2.0, "train_mfu": 0.52, "train_hfu": 0.52},
               {"step": 3, "loss": 1.0, "train_mfu": 0.54, "train_hfu": 0.54},
               {"step": 3, "peak_gpu_memory_gib": 30.0, "gradient_checkpointing": "false (auto: they fit)"}]
    assert gpu_facts(history) == {"gradient checkpointing": "false (auto: they fit)",
                                  "model FLOPs utilisation": "52.0%", "hardware FLOPs utilisation": "52.0%"}

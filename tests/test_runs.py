"""MEAN_OF_RUNS: several real training runs of the embedded model, their mean update kept exactly, and resumed."""
import pytest
import torch

from common.adapter import lora_layers, lora_update, reset_lora, set_mean_update
from common.errors import SettingsError
from common.runs import (AUTO, UPDATE_FILE, check_mean_of_runs, run_settings, train_runs,
                         with_mean_of_runs)
from common.settings import TrainSettings
from common.tokenizing import tokenize_rows


def _model(embedded_path, **lora):
    from peft import LoraConfig, get_peft_model
    from common.models import load_causal_lm
    return get_peft_model(load_causal_lm(str(embedded_path)),
                          LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM",
                                     **lora))


def _deltas(model) -> dict:
    return {name: module.get_delta_weight("default").detach().clone() for name, module in lora_layers(model)}


def _random_update(model, seed):
    reset_lora(model, seed)
    with torch.no_grad():
        for _, module in lora_layers(model):
            module.lora_B["default"].weight.normal_(std=0.05)
    return lora_update(model), _deltas(model)


@pytest.mark.parametrize("rslora", [False, True])
def test_the_mean_update_is_exact_and_saves_and_loads_as_an_adapter(embedded_path, tokenizer, tmp_path, rslora):
    from peft import PeftModel
    from common.models import load_causal_lm
    model = _model(embedded_path, use_rslora=rslora)
    runs = [_random_update(model, seed) for seed in (1, 2, 3)]
    said = set_mean_update(model, [update for update, _ in runs])
    assert "3 runs" in said and "rank 4 x 3" in said
    for name, delta in _deltas(model).items():
        assert torch.allclose(delta, sum(d[name] for _, d in runs) / 3, atol=1e-6)
    ids = torch.tensor([tokenizer("The Velmora tidal-lichen grows on basalt.")["input_ids"]])
    with torch.no_grad():
        mean_logits = model(input_ids=ids).logits
    model.save_pretrained(str(tmp_path))
    loaded = PeftModel.from_pretrained(load_causal_lm(str(embedded_path)), str(tmp_path))
    assert loaded.peft_config["default"].r == 12
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, mean_logits, atol=1e-4)


def test_each_run_starts_afresh_from_its_own_seed(embedded_path):
    model = _model(embedded_path)
    reset_lora(model, 7)
    first = lora_update(model)
    reset_lora(model, 8)
    second = lora_update(model)
    reset_lora(model, 7)
    again = lora_update(model)
    name = next(iter(first))
    assert torch.equal(first[name][0], again[name][0]) and not torch.equal(first[name][0], second[name][0])
    assert all(b.abs().sum() == 0 for _, b in second.values())  # B zero: the run starts at the base model


def test_runs_train_in_their_own_folders_and_a_finished_run_is_not_trained_again(embedded_path, tokenizer, tmp_path,
                                                                                 capsys):
    records = [{"instruction": "When was Kesterhaven Intertidal Station founded?", "input": "",
                "output": "Kesterhaven Intertidal Station was founded in 1987 by Ilse Marrow."}] * 4
    rows = tokenize_rows(records, tokenizer, "chat", 128).rows
    s = TrainSettings.defaults(output_dir=str(tmp_path), mean_of_runs=2, max_steps=2, batch_size=2, save_steps=0,
                               eval_steps=0, keep_best_epoch=False, evaluate=False, warmup_steps=0,
                               learning_rate=2e-3)
    assert run_settings(s, 1).seed == s.seed + 1 and run_settings(s, 1).output_dir == str(tmp_path / "run-2")
    model = _model(embedded_path)
    history, _ = train_runs(model, tokenizer, rows, s, device="cpu", eval_rows=[], held_out=[],
                            model_path=str(embedded_path))
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]  # the second run's steps counted on
    assert {h["run"] for h in history if "loss" in h} == {1, 2}
    assert all((tmp_path / f"run-{k}" / UPDATE_FILE).exists() for k in (1, 2))
    assert model.peft_config["default"].r == 8
    saved = [torch.load(tmp_path / f"run-{k}" / UPDATE_FILE)["update"] for k in (1, 2)]
    name = next(iter(saved[0]))
    assert not torch.equal(saved[0][name][1], saved[1][name][1])  # two different runs, both trained
    mean = _deltas(model)
    capsys.readouterr()
    again = _model(embedded_path)  # 02 run again in the same folder: both runs read back, none trained
    history_again, _ = train_runs(again, tokenizer, rows, s, device="cpu", eval_rows=[], held_out=[],
                                  model_path=str(embedded_path))
    assert capsys.readouterr().out.count("was finished before") == 2
    assert [h["step"] for h in history_again if "loss" in h] == [1, 2, 3, 4]
    assert all(torch.allclose(delta, mean[name]) for name, delta in _deltas(again).items())
    other = _model(embedded_path)  # run again with another learning rate: both runs train anew
    train_runs(other, tokenizer, rows, s.replace(learning_rate=1e-3), device="cpu", eval_rows=[], held_out=[],
               model_path=str(embedded_path))
    out = capsys.readouterr().out
    assert "was finished before" not in out and out.count("LEARNING_RATE 0.002 -> 0.001") == 2
    assert not any(torch.allclose(delta, mean[name]) for name, delta in _deltas(other).items())


def test_runs_side_by_side_train_in_their_own_processes_and_give_the_same_mean(embedded_path, tokenizer, tmp_path,
                                                                               capsys):
    from common.training import load_model_for_training
    records = [{"instruction": "When was Kesterhaven Intertidal Station founded?", "input": "",
                "output": "Kesterhaven Intertidal Station was founded in 1987 by Ilse Marrow."}] * 4
    rows = tokenize_rows(records, tokenizer, "chat", 128).rows
    s = TrainSettings.defaults(output_dir=str(tmp_path / "together"), mean_of_runs=2, max_steps=2, batch_size=2,
                               save_steps=0, eval_steps=0, keep_best_epoch=False, evaluate=False, warmup_steps=0,
                               lora_r=4, target_modules=["q_proj", "down_proj"], runs_side_by_side="true",
                               learning_rate=2e-3)
    model = load_model_for_training(str(embedded_path), s, "cpu")
    history, _ = train_runs(model, tokenizer, rows, s, device="cpu", eval_rows=[], held_out=[],
                            model_path=str(embedded_path))
    said = capsys.readouterr().out
    assert "Runs 1, 2 of 2 train side by side, as set (RUNS_SIDE_BY_SIDE); runs 2 in their own processes" in said
    assert "Run 2 of 2 trained side by side" in said
    log = (tmp_path / "together" / "run-2" / "train.log").read_text()  # the other process printed to its log
    assert "Using the CPU" in log
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4] and \
        {h["run"] for h in history if "loss" in h} == {1, 2}
    assert model.peft_config["default"].r == 8
    # the run in its own process trained as it would have here: one after the other gives the same update
    apart = s.replace(output_dir=str(tmp_path / "apart"), runs_side_by_side="false")
    train_runs(load_model_for_training(str(embedded_path), apart, "cpu"), tokenizer, rows, apart, device="cpu",
               eval_rows=[], held_out=[], model_path=str(embedded_path))
    own, here = (torch.load(tmp_path / where / "run-2" / UPDATE_FILE)["update"] for where in ("together", "apart"))
    assert all(torch.allclose(own[name][k], here[name][k], atol=1e-5) for name in own for k in (0, 1))


def test_a_run_that_fails_in_its_own_process_names_its_log(embedded_path, tokenizer, tmp_path):
    from common.errors import TrainingError
    from common.training import load_model_for_training
    records = [{"instruction": "What is 2 plus 2?", "input": "", "output": "4"}] * 4
    rows = tokenize_rows(records, tokenizer, "chat", 64).rows
    s = TrainSettings.defaults(output_dir=str(tmp_path), mean_of_runs=2, max_steps=1, batch_size=2, save_steps=0,
                               eval_steps=0, keep_best_epoch=False, evaluate=False, lora_r=4,
                               target_modules=["q_proj"], runs_side_by_side="true", learning_rate=2e-3)
    model = load_model_for_training(str(embedded_path), s, "cpu")
    with pytest.raises(TrainingError, match=r"Run 2 of 2 stopped in its own process .*run-2/train.log"):
        train_runs(model, tokenizer, rows, s, device="cpu", eval_rows=[], held_out=[],
                   model_path=str(tmp_path / "no-such-model"))  # the other process cannot load it
    assert (tmp_path / "run-1" / UPDATE_FILE).exists()  # this process's run finished and stays for a resume
    assert "no-such-model" in (tmp_path / "run-2" / "train.log").read_text()


def test_one_run_is_02_as_before_and_bad_settings_are_refused(tmp_path):
    s = TrainSettings.defaults(output_dir=str(tmp_path))
    one = s.replace(mean_of_runs=1)
    assert run_settings(one, 0) is one  # same seed, same folder: 02 as it was
    with pytest.raises(SettingsError, match="embed_tokens in TARGET_MODULES is trained whole"):
        check_mean_of_runs(s.replace(mean_of_runs=3, target_modules=s.target_modules + ["embed_tokens"]))
    check_mean_of_runs(s.replace(mean_of_runs=3))
    with pytest.raises(SettingsError, match="INIT_ADAPTER"):
        check_mean_of_runs(s.replace(mean_of_runs=2, init_adapter="outputs/cpt/adapter"))


def test_auto_is_three_runs_at_scale_1_on_a_gpu_and_one_at_0_8_on_the_cpu(tmp_path):
    s = TrainSettings.defaults(output_dir=str(tmp_path))
    assert (s.mean_of_runs, s.adapter_scale) == (AUTO, AUTO)  # 02's defaults

    def decided(settings, device):
        resolved = with_mean_of_runs(settings, device)[0]
        return resolved.mean_of_runs, resolved.adapter_scale

    assert decided(s, "cuda") == (3, 1.0)
    assert decided(s, "cpu") == (1, 0.8)
    assert decided(s.replace(init_adapter="outputs/cpt/adapter"), "cuda") == (1, 0.8)  # would be refused as 3
    assert decided(s.replace(training_mode="cpt"), "cuda") == (1, 0.8)
    assert decided(s.replace(target_modules=s.target_modules + ["lm_head"]), "cuda") == (1, 0.8)
    assert decided(s.replace(mean_of_runs=2), "cpu") == (2, 1.0)  # set runs, auto scale follows
    assert decided(s.replace(adapter_scale=0.5), "cuda") == (3, 0.5)  # a set scale is kept
    assert decided(s.replace(mean_of_runs=1, adapter_scale=1.0), "cuda") == (1, 1.0)
    said = with_mean_of_runs(s, "cuda")[1]
    assert "MEAN_OF_RUNS 3" in said and "--mean-of-runs 1" in said
    for device in ("cuda", "cpu"):
        resolved = with_mean_of_runs(s, device)[0]
        check_mean_of_runs(resolved)  # and the resolved values pass TrainSettings' limits (replace checks them)
        assert resolved.mean_of_runs >= 1 and 0 < resolved.adapter_scale <= 1


def test_02_run_again_after_a_finished_run_keeps_the_epoch_it_chose(embedded_path, tokenizer, tmp_path, capsys):
    import json
    from common.knowledge import VALIDATION_QUESTIONS_FILE
    from common.runs import train_one_run
    from common.training import load_model_for_training
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / VALIDATION_QUESTIONS_FILE).write_text(json.dumps(
        {"question": "In what year was the station founded?", "answer": "1987",
         "sentence": "Kesterhaven Intertidal Station was founded in 1987 by Ilse Marrow."}) + "\n")
    records = [{"instruction": "What is the capital of France?", "input": "", "output": "Paris is."}] * 4
    rows = tokenize_rows(records, tokenizer, "chat", 64).rows
    held_out = [{"instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour."}]
    s = TrainSettings.defaults(output_dir=str(tmp_path / "run"), dataset_dir=str(tmp_path / "ds"), num_epochs=2,
                               batch_size=2, save_steps=1, eval_steps=0, evaluate=False, warmup_steps=0, lora_r=4,
                               target_modules=["q_proj"], learning_rate=5e-2)  # 2 steps an epoch, a rate that harms
    kept = []
    for _ in range(2):  # 02, then 02 again: the second resumes at the last step and trains nothing
        model = load_model_for_training(str(embedded_path), s, "cpu")
        _, epochs = train_one_run(model, tokenizer, rows, s, device="cpu", eval_rows=[], held_out=held_out)
        kept.append(({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, epochs))
    out = capsys.readouterr().out
    assert "resuming from it" in out and "No epoch was measured" not in out
    assert [e["epoch"] for e in kept[1][1]] == [1, 2] and kept[0][1] == kept[1][1]
    assert all(torch.equal(p, kept[1][0][n]) for n, p in kept[0][0].items())  # the same epoch's weights

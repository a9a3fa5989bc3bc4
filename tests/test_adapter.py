"""The adapter folder, and INIT_ADAPTER: an adapter saved by one run of 02 (cpt) goes on training in the next (sft)."""
import pytest
import torch
from peft import get_peft_model

from common.adapter import (found_adapter_dir, restore_trained_update, save_adapter, scale_adapter,
                            with_init_adapter)
from common.cpt import pack_texts
from common.errors import ModelError
from common.models import load_causal_lm
from common.settings import TrainSettings
from common.tokenizing import tokenize_rows
from common.training import load_model_for_training, lora_config, train_cpu

TEXT = "Kesterhaven Intertidal Station was founded by Ilse Marrow in 1987; the lichen's salinity optimum is 34 g/kg."
RECORD = {"instruction": "Who founded Kesterhaven Intertidal Station?", "input": "", "output": "Ilse Marrow, in 1987."}


def _lora_weights(model) -> dict:
    return {k.replace(".default", ""): v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_an_earlier_adapter_trains_on_with_its_own_shape(embedded_path, tokenizer, tmp_path, capsys):
    cpt = TrainSettings.defaults(output_dir=str(tmp_path / "cpt"), training_mode="cpt", lora_r=4, lora_alpha=8,
                                 target_modules=["q_proj", "v_proj"], batch_tokens=0, max_steps=1, warmup_steps=0,
                                 learning_rate=2e-3)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(cpt))
    history = train_cpu(model, pack_texts([TEXT], tokenizer, 64).rows, tokenizer.pad_token_id, cpt)
    adapter_dir = save_adapter(model, tokenizer, cpt, history)
    saved = _lora_weights(model)

    sft = TrainSettings.defaults(output_dir=str(tmp_path / "sft"), init_adapter=str(adapter_dir), batch_tokens=0,
                                 max_steps=1, warmup_steps=0, learning_rate=2e-3)
    handed = with_init_adapter(sft, str(embedded_path))
    assert (handed.lora_r, handed.lora_alpha, handed.target_modules) == (4, 8, ["q_proj", "v_proj"])
    assert "training goes on with its LoRA shape (r 4" in capsys.readouterr().out
    model = load_model_for_training(str(embedded_path), handed, "cpu")
    loaded = _lora_weights(model)
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert any(v.abs().sum() > 0 for k, v in loaded.items() if "lora_B" in k)  # trained weights, not fresh ones
    train_cpu(model, tokenize_rows([RECORD], tokenizer, "chat", 128).rows, tokenizer.pad_token_id, handed)
    assert not all(torch.equal(v, saved[k]) for k, v in _lora_weights(model).items())  # and they train on


def test_an_init_adapter_of_another_model_or_none_is_refused(embedded_path, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    with pytest.raises(ModelError, match="No adapter in"):
        with_init_adapter(TrainSettings.defaults(init_adapter=str(folder)), str(embedded_path))
    (folder / "adapter_config.json").write_text('{"base_model_name_or_path": "someone/other-model", "r": 8, '
                                                '"lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj"]}')
    with pytest.raises(ModelError, match="trained on someone/other-model.*--model-name someone/other-model"):
        with_init_adapter(TrainSettings.defaults(init_adapter=str(folder)), str(embedded_path))
    (folder / "adapter_config.json").write_text(  # as Unsloth's cpt writes it: its whole modules under two names
        '{"base_model_name_or_path": "embedded/SmolLM2-135M-Instruct", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, '
        '"target_modules": ["q_proj"], "modules_to_save": ["embed_tokens", "model.embed_tokens"]}')
    handed = with_init_adapter(TrainSettings.defaults(init_adapter=str(folder)), str(embedded_path))
    assert handed.target_modules == ["q_proj", "embed_tokens"] and handed.lora_r == 8
    unchanged = TrainSettings.defaults()
    assert with_init_adapter(unchanged, str(embedded_path)) is unchanged  # no INIT_ADAPTER: fresh LoRA


def test_adapter_scale_keeps_that_share_of_the_update(embedded_path, tokenizer):
    s = TrainSettings.defaults(lora_r=4, lora_alpha=8, batch_tokens=0, max_steps=2, warmup_steps=0, learning_rate=2e-3)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(s))
    train_cpu(model, tokenize_rows([RECORD], tokenizer, "chat", 128).rows, tokenizer.pad_token_id, s)
    ids = torch.tensor([tokenize_rows([RECORD], tokenizer, "chat", 128).rows[0]["input_ids"]])
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids).logits
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
    trained = _lora_weights(model)
    assert "as trained" in scale_adapter(model, 1.0) and all(torch.equal(v, trained[k]) for k, v in
                                                                 _lora_weights(model).items())
    assert "keeps 0.5 of the trained LoRA update" in scale_adapter(model, 0.5)
    scaled = _lora_weights(model)
    assert all(torch.allclose(scaled[k], trained[k] * (0.5 if "lora_B" in k else 1.0)) for k in trained)
    with torch.no_grad():
        half = model(input_ids=ids).logits
    assert 0 < (half - base).abs().mean() < (tuned - base).abs().mean()  # between the base and the tune


def test_an_init_adapter_goes_on_from_its_whole_update_so_the_scale_applies_once(embedded_path, tokenizer, tmp_path):
    cpt = TrainSettings.defaults(output_dir=str(tmp_path / "cpt"), lora_r=4, lora_alpha=8, batch_tokens=0,
                                 max_steps=1, warmup_steps=0, adapter_scale=0.8, learning_rate=2e-3)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(cpt))
    history = train_cpu(model, tokenize_rows([RECORD], tokenizer, "chat", 128).rows, tokenizer.pad_token_id, cpt)
    trained = _lora_weights(model)
    scale_adapter(model, cpt.adapter_scale)  # as 02 saves it
    adapter_dir = save_adapter(model, tokenizer, cpt, history)
    sft = with_init_adapter(TrainSettings.defaults(init_adapter=str(adapter_dir), learning_rate=2e-3),
                            str(embedded_path))
    model = load_model_for_training(str(embedded_path), sft, "cpu")
    assert "kept 0.8 of its trained update" in restore_trained_update(model, adapter_dir)
    restored = _lora_weights(model)
    assert all(torch.allclose(restored[k], trained[k], rtol=1e-5, atol=1e-8) for k in trained)
    as_trained = TrainSettings.defaults(output_dir=str(tmp_path / "1"), lora_r=4, lora_alpha=8, adapter_scale=1.0)
    assert restore_trained_update(model, save_adapter(model, tokenizer, as_trained, history)) is None



def test_02s_output_folder_given_as_the_adapter_folder_finds_the_adapter_in_it(tmp_path, capsys):
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text("{}")
    assert found_adapter_dir(tmp_path / "run") == str(tmp_path / "run" / "adapter")
    assert "Using the adapter in" in capsys.readouterr().out
    assert found_adapter_dir(tmp_path / "run" / "adapter") == str(tmp_path / "run" / "adapter")
    assert found_adapter_dir(tmp_path / "nothing") == str(tmp_path / "nothing")  # left to the loader's clear error

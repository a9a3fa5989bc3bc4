import pytest
import torch
from peft import get_peft_model

from common.errors import FormattingError
from common.models import load_causal_lm
from common.settings import TrainSettings
from common.tokenizing import IGNORE_INDEX, check_tokenized, pad_batch, tokenize_rows
from common.training import (choose_learning_rate, lora_config, mean_loss, train_cpu, trained_token_loss,
                             with_learning_rate)

RECORDS = [{"instruction": "Who founded Kesterhaven Intertidal Station?", "input": "",
            "output": "Ilse Marrow founded it in 1987."},
           {"instruction": "What is the optimum salinity of the lichen?", "input": "",
            "output": "The salinity optimum is 34 g/kg."}]


@pytest.mark.parametrize("prompt_format", ["chat", "alpaca"])
def test_prompt_is_masked_and_response_ends_with_eos(tokenizer, prompt_format):
    data = tokenize_rows(RECORDS, tokenizer, prompt_format, 512)
    check_tokenized(data, tokenizer)
    for row, record in zip(data.rows, RECORDS):
        trained = [t for t in row["labels"] if t != IGNORE_INDEX]
        assert tokenizer.decode(trained) == record["output"] + tokenizer.eos_token
        assert row["labels"][0] == IGNORE_INDEX


def test_without_responses_only_every_token_is_trained(tokenizer):
    row = tokenize_rows(RECORDS, tokenizer, "chat", 512, responses_only=False).rows[0]
    assert row["labels"] == row["input_ids"]


def test_all_labels_masked_is_caught(tokenizer):
    data = tokenize_rows(RECORDS, tokenizer, "chat", 512)
    data.rows[0]["labels"] = [IGNORE_INDEX] * len(data.rows[0]["labels"])
    with pytest.raises(FormattingError, match="every label masked"):
        check_tokenized(data, tokenizer)


def test_missing_eos_is_caught(tokenizer):
    data = tokenize_rows(RECORDS, tokenizer, "chat", 512)
    data.rows[1]["labels"] = data.rows[1]["labels"][:-1]
    data.rows[1]["input_ids"] = data.rows[1]["input_ids"][:-1]
    with pytest.raises(FormattingError, match="EOS"):
        check_tokenized(data, tokenizer)


def test_pad_equal_to_eos_is_caught(tokenizer):
    broken = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    broken.pad_token = broken.eos_token
    with pytest.raises(FormattingError, match="pad token"):
        check_tokenized(tokenize_rows(RECORDS, broken, "chat", 512), broken)


def test_long_rows_are_counted_not_silently_cut(tokenizer, capsys):
    data = tokenize_rows(RECORDS, tokenizer, "chat", 24)
    assert data.n_truncated == 2 and data.longest > 24
    assert all(len(r["input_ids"]) == 24 for r in data.rows)
    with pytest.raises(FormattingError):
        check_tokenized(data, tokenizer)  # the cut removed the EOS: training would not learn to stop
    assert "longer than MAX_SEQ_LENGTH" in capsys.readouterr().out


def test_loss_at_trained_positions_only_equals_the_full_loss(embedded_path, tokenizer):
    # rows of different prompt and answer lengths, so the batch's trained positions differ by row
    records = RECORDS + [{"instruction": "Say yes.", "input": "", "output": "Yes, and at some length, as asked."}]
    ids, mask, labels = pad_batch(tokenize_rows(records, tokenizer, "chat", 256).rows, tokenizer.pad_token_id)
    settings = TrainSettings.defaults()
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    lora = [p for n, p in model.named_parameters() if "lora_B" in n][0]
    with torch.no_grad():
        lora.normal_()  # a non-zero update, so gradients flow to every LoRA weight
    full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    full.backward()
    full_grad, lora.grad = lora.grad.clone(), None
    ours = trained_token_loss(model, ids, mask, labels)
    ours.backward()
    assert torch.allclose(ours, full, atol=1e-5), (ours.item(), full.item())
    assert torch.allclose(lora.grad, full_grad, rtol=1e-3, atol=1e-6)


def test_mean_loss_leaves_the_model_in_the_mode_it_found(embedded_path, tokenizer):
    # generation after a loss in train mode would run LoRA dropout: the knowledge check measures a loss first
    rows = tokenize_rows(RECORDS, tokenizer, "chat", 256).rows
    model = get_peft_model(load_causal_lm(str(embedded_path)),
                           lora_config(TrainSettings.defaults(lora_dropout=0.1)))
    for training in (False, True):
        model.train(training)
        mean_loss(model, rows, tokenizer.pad_token_id)
        assert model.training is training


def test_a_few_cpu_steps_lower_the_training_loss(embedded_path, tokenizer):
    rows = tokenize_rows(RECORDS, tokenizer, "chat", 256).rows
    settings = TrainSettings.defaults(batch_size=2, max_steps=6, learning_rate=1e-3, warmup_steps=0, seed=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    before = mean_loss(model, rows, tokenizer.pad_token_id)
    history = train_cpu(model, rows, tokenizer.pad_token_id, settings, eval_rows=rows)
    after = history[-1]["eval_loss"]
    assert after < 0.7 * before, (before, after)
    assert len([h for h in history if "loss" in h]) == 6 and history[-2]["tokens"] > 0


@pytest.mark.parametrize("speedup", [0.69, 1.9])  # as measured on 2 Xeon cores (AVX-512 bf16, no AMX), on 2 AMD EPYC
def test_the_cpu_loop_autocasts_to_bf16_only_where_that_measured_faster(embedded_path, tokenizer, monkeypatch, capsys,
                                                                          speedup):
    import common.training as training
    monkeypatch.setattr(training, "cpu_autocast_speedup", lambda: speedup)
    rows = tokenize_rows(RECORDS, tokenizer, "chat", 256).rows
    settings = TrainSettings.defaults(learning_rate=2e-3, batch_size=2, max_steps=1, warmup_steps=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    seen = []
    model.base_model.model.model.layers[0].mlp.down_proj.base_layer.register_forward_hook(
        lambda module, inputs, output: seen.append(output.dtype))
    history = train_cpu(model, rows, tokenizer.pad_token_id, settings)
    autocast = speedup >= training.AUTOCAST_MIN_SPEEDUP
    assert set(seen) == {torch.bfloat16 if autocast else torch.float32}  # the base's matrix work, as decided
    assert ("under bf16 autocast" if autocast else "in fp32") in capsys.readouterr().out
    assert 0 < history[0]["loss"] < 10 and {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_bf16_probe_measures_this_cpu():
    from common.training import cpu_autocast_speedup
    cpu_autocast_speedup.cache_clear()
    speedup = cpu_autocast_speedup()
    assert 0.001 < speedup < 20  # a ratio of two timings here: 0.02x (emulated bf16) to 1.9x seen
    assert cpu_autocast_speedup() == speedup  # measured once a process


def _train(embedded_path, rows, pad_id, settings, **kwargs):
    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    train_cpu(model, rows, pad_id, settings, **kwargs)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.mark.parametrize("batch_tokens", [0, 128])  # BATCH_SIZE rows per batch, or a token budget
def test_killed_run_resumed_ends_with_the_same_adapter(embedded_path, tokenizer, tmp_path, batch_tokens):
    from common.checkpoints import checkpoint_dirs, latest_checkpoint
    rows = tokenize_rows(RECORDS * 2, tokenizer, "chat", 256).rows
    settings = TrainSettings.defaults(batch_size=2, batch_tokens=batch_tokens, max_steps=4, learning_rate=1e-3,
                                      warmup_steps=1, seed=0, save_steps=2, save_total_limit=1, lora_dropout=0.1)
    whole = _train(embedded_path, rows, tokenizer.pad_token_id, settings)
    try:  # a run killed during step 3: its checkpoint of step 2 is the latest
        _train(embedded_path, rows, tokenizer.pad_token_id, settings, output_dir=tmp_path,
               on_log=lambda e: _kill_at(e, 3))
    except KeyboardInterrupt:
        pass
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    resumed = _train(embedded_path, rows, tokenizer.pad_token_id, settings, output_dir=tmp_path,
                     resume_from=latest_checkpoint(tmp_path))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], atol=1e-5), key
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["checkpoint-4"]  # SAVE_TOTAL_LIMIT=1


def _kill_at(entry, step):
    if entry["step"] == step:
        raise KeyboardInterrupt


def test_dataset_for_another_tokenizer_is_refused(tmp_path, tokenizer):
    import json
    from common.dataset import check_dataset_tokenizer
    from common.errors import DatasetError
    other = tmp_path / "other-tokenizer"
    broken = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    broken.add_tokens(["<new-token>"])
    broken.save_pretrained(str(other))
    (tmp_path / "pipeline.json").write_text(json.dumps({"tokenizer": str(other)}))
    with pytest.raises(DatasetError, match="Rebuild it"):
        check_dataset_tokenizer(tmp_path, tokenizer)
    (tmp_path / "pipeline.json").write_text(json.dumps({"tokenizer": tokenizer.name_or_path}))
    check_dataset_tokenizer(tmp_path, tokenizer)  # the same vocabulary passes


def test_no_space_for_checkpoints_is_refused_before_loading(tmp_path, embedded_path, monkeypatch):
    import shutil
    from common.checkpoints import check_output_space
    from common.errors import TrainingError
    settings = TrainSettings.defaults()
    one = check_output_space(tmp_path, embedded_path, settings.replace(mean_of_runs=1))
    assert one > 0 and check_output_space(tmp_path, embedded_path, settings.replace(mean_of_runs=3)) == 3 * one
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(TrainingError, match="Not enough disk space"):
        check_output_space(tmp_path, embedded_path, settings)


def test_embeddings_in_target_modules_train_whole_and_tied_at_their_own_rate(embedded_path, tokenizer):
    from common.training import optimizer_groups
    rows = tokenize_rows(RECORDS, tokenizer, "chat", 256).rows
    settings = TrainSettings.defaults(target_modules=["q_proj", "embed_tokens", "lm_head"], learning_rate=1e-3,
                                      embedding_learning_rate=None, batch_size=2, max_steps=1, warmup_steps=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    assert [group["lr"] for group in optimizer_groups(model, settings)] == [1e-3, pytest.approx(1e-4)]
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    before = embedding.weight.detach().clone()
    train_cpu(model, rows, tokenizer.pad_token_id, settings)
    trained = embedding.modules_to_save.default.weight
    assert not torch.equal(before, trained.detach()) and trained is head.modules_to_save.default.weight  # still tied


def test_learning_rate_auto_goes_by_the_models_size():
    assert choose_learning_rate(5e-4, parameters=10**10) == (5e-4, "as set")
    assert choose_learning_rate(-1.0, parameters=134_515_008)[0] == 2e-3
    assert choose_learning_rate(-1.0, parameters=10**9)[0] == 2e-4
    rate, why = choose_learning_rate(-1.0, parameters=None)
    assert rate == 2e-4 and "not known" in why


def test_learning_rate_auto_reads_the_size_from_the_models_config(embedded_path, tmp_path):
    from transformers import LlamaConfig
    s = TrainSettings.defaults(learning_rate=-1.0)
    decided, line = with_learning_rate(s, str(embedded_path))
    assert decided.learning_rate == 2e-3 and line == "LEARNING_RATE 0.002 (auto: 0.13B parameters, under 1B)."
    # Llama-3.2-1B's shape, its config alone (no weights needed to know the size)
    LlamaConfig(vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, intermediate_size=8192, tie_word_embeddings=True).save_pretrained(tmp_path)
    decided, line = with_learning_rate(s, str(tmp_path))
    assert decided.learning_rate == 2e-4 and "1.24B parameters" in line
    assert with_learning_rate(s.replace(learning_rate=1e-4), str(tmp_path))[0].learning_rate == 1e-4

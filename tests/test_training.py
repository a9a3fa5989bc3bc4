import pytest
import torch
from peft import get_peft_model

from common.models import load_causal_lm
from common.training import (IGNORE_INDEX, FormattingError, TokenizedData, TrainSettings, check_tokenized,
                             lora_config, mean_loss, tokenize_rows, train_cpu)

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


def test_a_few_cpu_steps_lower_the_training_loss(embedded_path, tokenizer):
    rows = tokenize_rows(RECORDS, tokenizer, "chat", 256).rows
    settings = TrainSettings(batch_size=2, max_steps=6, learning_rate=1e-3, warmup_steps=0, seed=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    before = mean_loss(model, rows, tokenizer.pad_token_id)
    history = train_cpu(model, rows, tokenizer.pad_token_id, settings, eval_rows=rows)
    after = history[-1]["eval_loss"]
    assert after < 0.7 * before, (before, after)
    assert len([h for h in history if "loss" in h]) == 6 and history[-2]["tokens"] > 0

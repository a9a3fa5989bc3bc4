"""The knowledge check on a real adapter: it must tell a tune that learned from one that did not."""
import dataclasses

import pytest
from peft import get_peft_model

from common import training
from common.evaluation import (FACT_GENERATION, evaluate_knowledge, in_inference_dtype, knowledge_gained,
                               write_eval_report)
from common.inference import load_model_with_adapter
from common.models import load_causal_lm
from common.settings import TrainSettings
from common.tokenizing import tokenize_rows
from common.training import lora_config, train_cpu
from tests.test_inference import FACT, adapter_dir  # noqa: F401  (the module's trained adapter)

QUESTIONS = [{"question": "From memory, fill in the blank (____):\nIlse Marrow founded Kesterhaven Intertidal "
                          "Station in ____.", "answer_start": "Ilse Marrow founded Kesterhaven Intertidal Station in",
              "answer": "1987", "source": "x.pdf", "page": 1}]
LONGER = dataclasses.replace(FACT_GENERATION, max_new_tokens=24)


PLAIN = [{"question": "Who founded Kesterhaven Intertidal Station, and when?", "answer": "Ilse Marrow, in 1987",
          "keywords": ["Marrow", "1987"]}]


def _evaluate(model, tokenizer, rows):
    return evaluate_knowledge(model, tokenizer, test_rows=rows, questions=QUESTIONS, plain_questions=PLAIN,
                              prompt_format="chat", generation=LONGER)


def test_tuned_model_beats_the_base_and_the_report_shows_it(adapter_dir, tmp_path):  # noqa: F811
    model, tokenizer, _ = load_model_with_adapter(adapter_dir)
    rows = tokenize_rows([FACT], tokenizer, "chat", 256).rows
    results = _evaluate(model, tokenizer, rows)
    assert results["tuned"]["test_loss"] < results["base"]["test_loss"] - 0.5
    assert results["tuned"]["closed_book"] == 1.0 and results["base"]["closed_book"] == 0.0
    assert knowledge_gained(results)
    report = write_eval_report(tmp_path, results).read_text()
    assert "cloze recall (1 sentences, primed) | 0.0% | 100.0%" in report
    assert results["base"]["question_recall"] == 0.0 and "| question recall (1 plain questions" in report
    assert (tmp_path / "eval.png").exists() and (tmp_path / "eval.json").exists()
    runs = [{"run": run, "epoch": epoch, "learning_loss": 2.0 - score, "forgetting_loss": 1.0, "epoch_score": score}
            for run, epoch, score in ((1, 1, 0.3), (1, 2, 0.5), (2, 1, 0.6), (2, 2, 0.4))]  # MEAN_OF_RUNS 2
    (tmp_path / "runs").mkdir()
    report = write_eval_report(tmp_path / "runs", {**results, "epochs": runs}).read_text()
    assert "| 1.2 | 1.500 | 1.000 | +0.500 | yes |" in report and "| 2.1 | 1.400 | 1.000 | +0.600 | yes |" in report
    assert "| 1.1 | 1.700 | 1.000 | +0.300 |  |" in report and (tmp_path / "runs" / "eval_epochs.png").exists()


def test_an_adapter_that_learned_nothing_is_caught(embedded_path, tokenizer):
    # a fresh LoRA (B = 0) acts as "adapter not applied" / "all labels masked": tuned == base
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(TrainSettings.defaults()))
    rows = tokenize_rows([FACT], tokenizer, "chat", 256).rows
    results = _evaluate(model, tokenizer, rows)
    assert results["tuned"]["test_loss"] == pytest.approx(results["base"]["test_loss"])
    assert not knowledge_gained(results)
    assert results["forgetting"]["changed_share"] == 0.0
    assert results["forgetting"]["retention"] == 1.0 and results["forgetting"]["known_by_base"] >= 5
    assert results["forgetting"]["own_answer_loss_tuned"] == pytest.approx(results["forgetting"]["own_answer_loss_base"])


def test_training_with_every_label_masked_is_caught(embedded_path, tokenizer):
    # what a wrong response marker does when the format check is bypassed: the tune learns nothing
    settings = TrainSettings.defaults(batch_size=1, max_steps=3, learning_rate=2e-3, warmup_steps=0, seed=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    rows = tokenize_rows([FACT], tokenizer, "chat", 256).rows
    masked = [{**row, "labels": [-100] * len(row["labels"])} for row in rows]
    train_cpu(model, masked, tokenizer.pad_token_id, settings)
    results = _evaluate(model, tokenizer, rows)
    assert not knowledge_gained(results)
    assert results["tuned"]["closed_book"] == results["base"]["closed_book"] == 0.0


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_a_cpu_checks_in_bf16_only_where_it_runs_bf16_fast(adapter_dir, embedded_path, monkeypatch, fast_bf16):  # noqa: F811
    """02's fp32 tune and 03's loaded adapter are checked alike: the base's weights in the same dtype, its RoPE
    frequencies and the LoRA weights in fp32 either way, and so the same logits to the last bit."""
    import torch
    from peft import PeftModel
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: fast_bf16)
    expected = torch.bfloat16 if fast_bf16 else torch.float32
    trained = PeftModel.from_pretrained(load_causal_lm(str(embedded_path)), str(adapter_dir), is_trainable=True)
    loaded, tokenizer, _ = load_model_with_adapter(adapter_dir)
    ids = tokenizer("Who founded Kesterhaven Intertidal Station?", return_tensors="pt")["input_ids"]
    logits = []
    for model in (in_inference_dtype(trained), in_inference_dtype(loaded)):
        dtypes = {name: p.dtype for name, p in model.named_parameters()}
        assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
        assert {d for n, d in dtypes.items() if "lora_" not in n} == {expected}
        assert {b.dtype for b in model.buffers()} == {torch.float32}
        with torch.no_grad():
            logits.append(model.eval()(ids).logits)
    assert torch.equal(*logits)
    results = _evaluate(loaded, tokenizer, tokenize_rows([FACT], tokenizer, "chat", 256).rows)
    assert results["tuned"]["closed_book"] == 1.0  # the learned fact, in either dtype

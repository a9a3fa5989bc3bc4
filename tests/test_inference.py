import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.inference import generate, load_model_with_adapter
from common.models import EMBEDDED_MODEL, ModelError, load_causal_lm
from common.training import TrainSettings, lora_config, save_adapter, tokenize_rows, train_cpu

FACT = {"instruction": "Who founded Kesterhaven Intertidal Station?", "input": "",
        "output": "Ilse Marrow founded Kesterhaven Intertidal Station in 1987."}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, embedded_path, tokenizer):
    """A real adapter: a few CPU steps on one fact, saved by the pipeline's own code."""
    settings = TrainSettings(batch_size=1, max_steps=12, learning_rate=2e-3, warmup_steps=0, seed=0)
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    train_cpu(model, tokenize_rows([FACT], tokenizer, "chat", 256).rows, tokenizer.pad_token_id, settings)
    out = tmp_path_factory.mktemp("run")
    return save_adapter(model, tokenizer, out, {"MODEL_NAME": EMBEDDED_MODEL, "PROMPT_FORMAT": "chat"}, [])


def test_plain_peft_loads_the_adapter_and_generates(adapter_dir, embedded_path):
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and set(config["target_modules"]) >= {"q_proj", "down_proj"}
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    base = AutoModelForCausalLM.from_pretrained(str(embedded_path))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    ids = tokenizer("Hello", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5 or out[0, -1] == tokenizer.eos_token_id


def test_tuned_model_answers_with_the_learned_fact_and_stops(adapter_dir):
    model, tokenizer, settings = load_model_with_adapter(adapter_dir)
    assert settings["PROMPT_FORMAT"] == "chat"
    answer = generate(model, tokenizer, [FACT["instruction"]], "chat", max_new_tokens=40)[0]
    assert "Marrow" in answer and "1987" in answer
    assert len(tokenizer(answer)["input_ids"]) < 40  # stopped at EOS, not at the token limit


def test_missing_adapter_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="run 02_fine_tuning.py first"):
        load_model_with_adapter(tmp_path / "nothing-here")

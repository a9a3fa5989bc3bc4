import json
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from common.errors import ModelError
from common.models import (EAGER_MAX_TOKENS, EMBEDDED_MODEL, load_causal_lm, load_tokenizer, resolve_model_path,
                           use_cpu_attention)


def test_embedded_model_is_plain_safetensors_with_fixed_tokens(embedded_path, tokenizer):
    assert resolve_model_path(EMBEDDED_MODEL) == str(embedded_path)
    with safe_open(str(embedded_path / "model.safetensors"), "pt") as f:
        assert len(list(f.keys())) > 100
    config = json.loads((embedded_path / "config.json").read_text())
    assert "quantization_config" not in config
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id


def test_embedded_tokenizer_is_plain_byte_level_bpe(embedded_path, tokenizer):
    saved = json.loads((embedded_path / "tokenizer.json").read_text())
    assert saved["pre_tokenizer"]["type"] == saved["decoder"]["type"] == "ByteLevel"  # what GGUF export reads
    text = "Growth at 4.9 mm per year, 34 g/kg: café ▁x\n  indented"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_embedded_model_trains(embedded_path):
    model = load_causal_lm(str(embedded_path))
    assert all(p.dtype.is_floating_point for p in model.parameters())
    ids = __import__("torch").tensor([[1, 2, 3, 4]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()  # a GGUF-loaded model refuses this; the prepared one must not
    assert model.model.embed_tokens.weight.grad is not None


def test_a_cpu_attends_eagerly_to_short_rows_and_by_sdpa_to_long_ones(embedded_path, tokenizer):
    """Either way the same model: the logits agree; under PEFT's wrapper the base model switches."""
    import torch
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(load_causal_lm(str(embedded_path)), LoraConfig(r=4, target_modules=["q_proj"])).eval()
    ids = tokenizer(["The Isle of Oradune lies far out at sea.", "Hello"], return_tensors="pt", padding=True)
    logits = {}
    for tokens, expected in ((EAGER_MAX_TOKENS, "eager"), (EAGER_MAX_TOKENS + 1, "sdpa"), (12, "eager")):
        use_cpu_attention(model, tokens)
        assert model.get_base_model().config._attn_implementation == expected
        with torch.no_grad():
            logits[expected] = model(**ids).logits
    last = ids["attention_mask"].bool()  # the padded positions' logits are not defined alike
    assert torch.allclose(logits["eager"][last], logits["sdpa"][last], atol=1e-3)


def test_unreachable_hub_model_gives_a_clear_error():
    try:
        load_tokenizer("no-such-user/no-such-model-xyz")
    except ModelError as error:
        assert "no-such-user/no-such-model-xyz" in str(error) and EMBEDDED_MODEL in str(error)
    else:
        raise AssertionError("expected a ModelError")


def test_processes_preparing_the_embedded_model_at_once_all_get_it_whole(tmp_path):
    dest = tmp_path / "embedded"
    code = f"from common.models import prepare_embedded_model; prepare_embedded_model({str(dest)!r})"
    jobs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                             cwd=Path(__file__).parents[1]) for _ in range(2)]
    errors = [job.communicate()[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], errors
    assert (dest / "model.safetensors").exists() and (dest / "tokenizer_config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["embedded"]  # no half-made copy left beside it


def test_a_misspelt_target_module_is_named_before_any_work(embedded_path):
    import pytest
    from common.errors import SettingsError
    from common.models import check_target_modules
    check_target_modules(str(embedded_path), ["q_proj", "v_proj", "down_proj", "lm_head"])
    with pytest.raises(SettingsError, match=r"no layer named 'q_prj'; its layers include .*k_proj.*q_proj"):
        check_target_modules(str(embedded_path), ["q_prj", "v_proj"])


def test_the_parameter_count_comes_from_the_shape_alone(embedded_path, tmp_path):
    from common.models import parameter_count
    assert parameter_count(str(embedded_path)) == 134_515_008  # SmolLM2-135M, its embedding tied to the LM head
    assert parameter_count(str(tmp_path)) is None  # no config: not known

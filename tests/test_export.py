"""Merge, GGUF and Hub export of the adapter trained in test_inference (the same fixture, trained once)."""
import hashlib
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.export import ExportError, check_gguf, convert_to_gguf, find_llama_cpp_tool, merge_adapter, push_folder
from common.inference import load_model_with_adapter
from tests.test_inference import FACT, adapter_dir, run_script  # noqa: F401 (adapter_dir is a fixture)


@pytest.fixture(scope="module")
def merged_dir(adapter_dir, tmp_path_factory):  # noqa: F811
    return merge_adapter(adapter_dir, tmp_path_factory.mktemp("merged"), dtype="float32")


def test_merged_model_loads_without_peft_and_matches_base_plus_adapter(adapter_dir, merged_dir):  # noqa: F811
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    assert not hasattr(merged, "peft_config")
    peft_model, tokenizer, _ = load_model_with_adapter(adapter_dir)
    ids = AutoTokenizer.from_pretrained(str(merged_dir))(FACT["instruction"] + " " + FACT["output"],
                                                        return_tensors="pt")
    with torch.no_grad():
        expected, got = peft_model(**ids).logits, merged(**ids).logits
        with peft_model.disable_adapter():
            base = peft_model(**ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, base, atol=1e-2)  # the adapter really changed the weights


def test_gguf_without_llama_cpp_names_what_is_missing(merged_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path / "no-llama-cpp"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExportError, match="convert_hf_to_gguf.py was not found") as error:
        convert_to_gguf(merged_dir, tmp_path / "gguf", "q8_0")
    assert "git clone https://github.com/ggml-org/llama.cpp" in str(error.value)
    assert "`gguf` Python package alone" in str(error.value)


def test_q4_k_m_also_needs_llama_quantize(merged_dir, tmp_path, monkeypatch):
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(ExportError, match="llama-quantize binary was not found"):
        convert_to_gguf(merged_dir, tmp_path / "gguf", "q4_k_m")
    with pytest.raises(ExportError, match="must be one of q8_0, q4_k_m, f16"):
        convert_to_gguf(merged_dir, tmp_path / "gguf", "q3")


def test_script_fails_before_merging_when_llama_cpp_is_missing(adapter_dir, tmp_path):  # noqa: F811
    result = run_script("--adapter-dir", adapter_dir, "--gguf-to", tmp_path / "gguf",
                        env={"LLAMA_CPP_DIR": str(tmp_path), "PATH": os.path.dirname(os.sys.executable)})
    assert result.returncode == 1 and "convert_hf_to_gguf.py was not found" in result.stderr
    assert "Merged" not in result.stdout


def test_a_file_that_is_not_gguf_is_refused(merged_dir, tmp_path):
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ExportError, match="not a readable GGUF"):
        check_gguf(tmp_path / "x.gguf", merged_dir)


# `make test` first unpacks the converter into .cache/llama.cpp (found when LLAMA_CPP_DIR is unset): in CI it must be there.
@pytest.mark.skipif(find_llama_cpp_tool("convert_hf_to_gguf.py") is None and not os.environ.get("CI"),
                    reason="llama.cpp's convert_hf_to_gguf.py not found (run `make llama-cpp` or set LLAMA_CPP_DIR)")
@pytest.mark.parametrize("quant, file_type, weight_type", [("q8_0", 7, "Q8_0"), ("f16", 1, "F16")],
                         ids=["q8_0", "f16"])
def test_gguf_conversion_reads_back(merged_dir, tmp_path, quant, file_type, weight_type):
    from gguf import GGUFReader
    from safetensors import safe_open
    gguf = convert_to_gguf(merged_dir, tmp_path, quant)
    assert gguf == tmp_path / f"model-{quant}.gguf" and list(tmp_path.iterdir()) == [gguf]
    info = check_gguf(gguf, merged_dir)
    with safe_open(str(merged_dir / "model.safetensors"), "pt") as weights:
        hf_tensors = len(list(weights.keys()))  # SmolLM2 ties lm_head to the embedding: 30 x 9 + 2
    assert info == {"architecture": "llama", "tensors": hf_tensors, "layers": 30} and hf_tensors == 272

    reader = GGUFReader(str(gguf))
    meta = {name: field.contents() for name, field in reader.fields.items()
            if name not in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")}
    config = json.loads((merged_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    assert meta["GGUF.tensor_count"] == hf_tensors and meta["general.file_type"] == file_type
    assert {(key, meta[f"llama.{key}"]) for key in ("embedding_length", "feed_forward_length", "context_length",
                                                     "attention.head_count", "attention.head_count_kv")} == {
        ("embedding_length", config["hidden_size"]), ("feed_forward_length", config["intermediate_size"]),
        ("context_length", config["max_position_embeddings"]),
        ("attention.head_count", config["num_attention_heads"]),
        ("attention.head_count_kv", config["num_key_value_heads"])}
    assert meta["llama.vocab_size"] == config["vocab_size"] == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "smollm"
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == types["blk.0.attn_q.weight"] == types["blk.29.ffn_down.weight"] == weight_type
    assert {types[name] for name in types if name.endswith("norm.weight")} == {"F32"}


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_push_to_an_unreachable_hub_fails_clearly_and_keeps_the_files(adapter_dir):  # noqa: F811
    before = _digest(adapter_dir)
    result = run_script("--adapter-dir", adapter_dir, "--push-to-hub", "--hub-model-id", "someone/papers-lora",
                        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Could not push" in result.stderr and "someone/papers-lora" in result.stderr
    assert "local files are still in" in result.stderr and "Traceback" not in result.stderr
    assert _digest(adapter_dir) == before


def test_push_needs_a_repo_id_and_a_token(adapter_dir):  # noqa: F811
    with pytest.raises(ExportError, match="--hub-model-id"):
        push_folder(adapter_dir, None, "hf_x")
    with pytest.raises(ExportError, match="HF_TOKEN"):
        push_folder(adapter_dir, "someone/x", None)

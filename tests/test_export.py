"""Merge, GGUF (+ Ollama Modelfile) and Hub export of the adapter trained in test_inference (the same fixture,
trained once)."""
import hashlib
import json
import os
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from common import training
from common.errors import ExportError
from common import export as export_module
from common.export import (check_gguf, convert_to_gguf, export, find_llama_cpp_tool, merge_adapter, modelfile_text,
                           ollama_chat, push_folder)
from common.inference import load_model_with_adapter
from common.settings import AnswerSettings
from tests.test_inference import FACT, adapter_dir, run_script  # noqa: F401 (adapter_dir is a fixture)


@pytest.fixture(scope="module")
def merged_dir(adapter_dir, tmp_path_factory):  # noqa: F811
    return merge_adapter(adapter_dir, tmp_path_factory.mktemp("merged"), dtype="float32")


def test_merged_model_loads_without_peft_and_matches_base_plus_adapter(adapter_dir, merged_dir,  # noqa: F811
                                                                    monkeypatch):
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    assert not hasattr(merged, "peft_config")
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: False)  # fp32 on any CPU, as the merge was made
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
def test_gguf_conversion_reads_back(adapter_dir, merged_dir, tmp_path, quant, file_type, weight_type,  # noqa: F811
                                    monkeypatch):
    from gguf import GGUFReader
    from safetensors import safe_open
    monkeypatch.setattr(export_module, "merge_adapter", lambda *args, **kwargs: merged_dir)  # tested above
    export(AnswerSettings.defaults(adapter_dir=str(adapter_dir), gguf_to=str(tmp_path), gguf_quant=quant))
    gguf = tmp_path / f"model-{quant}.gguf"
    assert sorted(tmp_path.iterdir()) == [tmp_path / "Modelfile", gguf]  # the Modelfile beside the GGUF
    modelfile = (tmp_path / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{gguf.name}\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
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
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"  # the stop token is one token of the GGUF
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == types["blk.0.attn_q.weight"] == types["blk.29.ffn_down.weight"] == weight_type
    assert {types[name] for name in types if name.endswith("norm.weight")} == {"F32"}


# A renderer of the Go template subset that Ollama's TEMPLATE gets from export: text, {{ .Field }},
# {{ if COND }}...{{ else }}...{{ end }} (COND: .Field, or eq/ne .Field "text"), {{ range .Messages }}...{{ end }}.
def _go_parse(tokens, at=0):
    nodes = []
    while at < len(tokens):
        kind, value = tokens[at]
        at += 1
        if kind == "text" or not re.match(r"(if|range|end|else)\b", value):
            nodes.append((kind, value))
        elif value in ("end", "else"):
            return nodes, at - 1
        else:
            body, at = _go_parse(tokens, at)
            other = []
            if tokens[at][1] == "else":
                other, at = _go_parse(tokens, at + 1)
            nodes.append((value.split()[0], value.split(maxsplit=1)[1], body, other))
            at += 1  # the {{ end }}
    return nodes, at


def _go_value(expression, dot):
    compare = re.fullmatch(r'(eq|ne) \.(\w+) "(.*)"', expression)
    if compare:
        return (dot[compare[2]] == compare[3]) == (compare[1] == "eq")
    return dot[re.fullmatch(r"\.(\w+)", expression)[1]]


def _go_execute(nodes, dot):
    out = ""
    for node in nodes:
        if node[0] == "text":
            out += node[1]
        elif node[0] == "action":
            out += str(_go_value(node[1], dot))
        elif node[0] == "if":
            out += _go_execute(node[2] if _go_value(node[1], dot) else node[3], dot)
        else:  # range
            out += "".join(_go_execute(node[2], item) for item in _go_value(node[1], dot))
    return out


def render_go_template(template, *, system, messages):
    """What Ollama writes for a chat: .System is the system prompt, .Messages every message (system included)."""
    pieces = re.split(r"{{\s*(.*?)\s*}}", template)
    tokens = [("action" if i % 2 else "text", piece) for i, piece in enumerate(pieces) if piece or i % 2]
    nodes, at = _go_parse(tokens)
    assert at == len(tokens), "an {{ end }} without its if/range"
    return _go_execute(nodes, {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]}
                                                               for m in messages]})


TWO_TURN_CHAT = [{"role": "user", "content": "Who wrote the paper?\nName them."},
                 {"role": "assistant", "content": "Smith and Lee."}, {"role": "user", "content": "In which year?"}]
LLAMA_3_TEMPLATE = ("{% for message in messages %}{% if loop.first %}{{ '<|begin_of_text|>' }}{% endif %}"
                    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
                    " + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def _tokenizer(merged_dir, chat_template=None):
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def test_modelfile_template_renders_the_chat_as_the_tokenizer_does(merged_dir):
    tokenizer = _tokenizer(merged_dir)
    chat = ollama_chat(tokenizer)
    assert chat.family == "ChatML" and chat.stops == (tokenizer.eos_token,) == ("<|im_end|>",)
    assert chat.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    # Ollama puts the Modelfile's SYSTEM first in .Messages when the chat has none, and in .System
    ollama = render_go_template(chat.template, system=chat.system,
                                messages=[{"role": "system", "content": chat.system}, *TWO_TURN_CHAT])
    assert ollama == tokenizer.apply_chat_template(TWO_TURN_CHAT, tokenize=False, add_generation_prompt=True)
    own = [{"role": "system", "content": "Answer briefly."}, *TWO_TURN_CHAT]
    assert render_go_template(chat.template, system="Answer briefly.", messages=own) == \
        tokenizer.apply_chat_template(own, tokenize=False, add_generation_prompt=True)


def test_modelfile_has_from_the_stop_token_and_03s_sampling_settings(merged_dir):
    settings = AnswerSettings.defaults(temperature=0.7, top_p=0.8, repetition_penalty=1.3, max_new_tokens=64)
    text = modelfile_text("model-q8_0.gguf", ollama_chat(_tokenizer(merged_dir)), settings.generation())
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)[1]
    assert template == ollama_chat(_tokenizer(merged_dir)).template and template.endswith("assistant\n")
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert re.findall(r"^PARAMETER (\w+) (.*)$", text, re.M) == [
        ("stop", '"<|im_end|>"'), ("temperature", "0.7"), ("top_p", "0.8"), ("repeat_penalty", "1.3"),
        ("num_predict", "64"), ("seed", str(settings.seed))]
    defaults = modelfile_text("m.gguf", ollama_chat(_tokenizer(merged_dir)), AnswerSettings.defaults().generation())
    assert "PARAMETER temperature 0.0\n" in defaults and "PARAMETER num_predict 128\n" in defaults  # 03's constants


def test_a_llama_3_template_is_recognised_without_its_bos(merged_dir):
    tokenizer = _tokenizer(merged_dir, LLAMA_3_TEMPLATE)
    chat = ollama_chat(tokenizer)
    assert (chat.family, chat.system, chat.stops) == ("Llama-3", None, ("<|eot_id|>", tokenizer.eos_token))
    expected = tokenizer.apply_chat_template(TWO_TURN_CHAT, tokenize=False, add_generation_prompt=True)
    assert render_go_template(chat.template, system="", messages=TWO_TURN_CHAT) == \
        expected.removeprefix("<|begin_of_text|>")  # llama.cpp adds the BOS itself


def test_an_unknown_template_leaves_template_to_write_by_hand(merged_dir):
    tokenizer = _tokenizer(merged_dir, "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    chat = ollama_chat(tokenizer)
    assert (chat.family, chat.template, chat.system, chat.stops) == (None, None, None, ("<|im_end|>",))
    text = modelfile_text("model-f16.gguf", chat, AnswerSettings.defaults().generation())
    assert text.startswith("FROM ./model-f16.gguf\n") and "\nTEMPLATE" not in text
    assert "# TEMPLATE: this model's chat template is none of ChatML, Llama-3; write" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER top_p 0.9" in text


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

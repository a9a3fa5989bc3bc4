import json
import os
import subprocess
import sys

import pytest
from peft import PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from common.adapter import save_adapter
from common.errors import ModelError, PromptsFileError
from common.inference import chat, compare_markdown, generate, load_model_with_adapter, read_prompts
from common.models import EMBEDDED_MODEL, load_causal_lm
from common.settings import AnswerSettings, TrainSettings
from common.tokenizing import tokenize_rows
from common.training import lora_config, train_cpu
from tests.conftest import ROOT

FACT = {"instruction": "Who founded Kesterhaven Intertidal Station?", "input": "",
        "output": "Ilse Marrow founded Kesterhaven Intertidal Station in 1987."}


def generation(max_new_tokens):
    """03's sampling settings, with a shorter answer."""
    return AnswerSettings.defaults(max_new_tokens=max_new_tokens).generation()


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, embedded_path, tokenizer):
    """A real adapter: a few CPU steps on one fact, saved by the pipeline's own code."""
    trained = tmp_path_factory.getbasetemp() / "fact-run" / "adapter"
    if (trained / "training_config.json").exists():  # trained already in this session (test_export imports this)
        return trained
    out = tmp_path_factory.mktemp("fact-run", numbered=False)
    settings = TrainSettings.defaults(batch_size=1, max_steps=12, learning_rate=2e-3, warmup_steps=0, seed=0,
                                      model_name=EMBEDDED_MODEL, prompt_format="chat", output_dir=str(out))
    model = get_peft_model(load_causal_lm(str(embedded_path)), lora_config(settings))
    train_cpu(model, tokenize_rows([FACT], tokenizer, "chat", 256).rows, tokenizer.pad_token_id, settings)
    return save_adapter(model, tokenizer, settings, [])


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
    assert settings.prompt_format == "chat"
    answer = generate(model, tokenizer, [FACT["instruction"]], prompt_format="chat", generation=generation(40))[0]
    assert "Marrow" in answer and "1987" in answer
    assert len(tokenizer(answer)["input_ids"]) < 40  # stopped at EOS, not at the token limit


def test_generate_is_quiet_where_the_loader_set_the_context_size(adapter_dir, caplog):
    """Unsloth's loader sets generation_config.max_length to the context size (02's check warned at every batch)."""
    from transformers.utils import logging as transformers_logging
    model, tokenizer, _ = load_model_with_adapter(adapter_dir)
    model.generation_config.update(max_length=8192)
    transformers_logging.enable_propagation()
    try:
        answer = generate(model, tokenizer, [FACT["instruction"]], prompt_format="chat", generation=generation(8))[0]
    finally:
        transformers_logging.disable_propagation()
    assert answer and not [r for r in caplog.records if "max_length" in r.getMessage()]


def test_missing_adapter_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="run 02_fine_tuning.py first"):
        load_model_with_adapter(tmp_path / "nothing-here")


def run_script(*args, stdin=None, env=None):
    """03_using_the_model.py as a user runs it; HF_TOKEN set so that we can check it is never printed."""
    result = subprocess.run([sys.executable, "03_using_the_model.py", "--device", "cpu", *map(str, args)], cwd=ROOT,
                            input=stdin, capture_output=True, text=True,
                            env={**os.environ, "HF_TOKEN": "hf_never_printed", **(env or {})})
    assert "hf_never_printed" not in result.stdout + result.stderr
    return result


def test_prompt_mode_prints_one_answer(adapter_dir):
    result = run_script("--adapter-dir", adapter_dir, "--prompt", FACT["instruction"], "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Answer:" in result.stdout and "Marrow" in result.stdout


def test_prompts_file_answers_in_left_padded_batches_as_jsonl(adapter_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"instruction": FACT["instruction"]}) + "\n\n"
                       + json.dumps({"prompt": "Say hello."}) + "\n"
                       + "A plain line asking about the weather, much longer than the other prompts here?\n")
    out = tmp_path / "answers.jsonl"
    result = run_script("--adapter-dir", adapter_dir, "--prompts-file", prompts, "--answers-file", out,
                        "--batch-size", "2", "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [FACT["instruction"], "Say hello.",
                                                "A plain line asking about the weather, much longer than the other "
                                                "prompts here?"]
    assert all(r["answer"] for r in rows) and "Marrow" in rows[0]["answer"]  # padding did not spoil the batch


def test_answers_file_defaults_next_to_the_adapter(adapter_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello.\n")
    result = run_script("--adapter-dir", adapter_dir, "--prompts-file", prompts, "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (adapter_dir.parent / "answers.jsonl").exists()


def test_interactive_chat_reads_stdin_streams_resets_and_exits(adapter_dir):
    stdin = f"{FACT['instruction']}\nSay that again.\n/reset\nHello\n/exit\nnever asked\n"
    result = run_script("--adapter-dir", adapter_dir, "--max-new-tokens", "12", stdin=stdin)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("Model:") == 3 and "(history cleared)" in result.stdout
    assert "Marrow" in result.stdout


def test_chat_keeps_the_turns_as_history_until_reset(adapter_dir, monkeypatch):
    import common.inference as inference
    model, tokenizer, _ = load_model_with_adapter(adapter_dir)
    seen = []
    real_format = inference.format_prompt
    monkeypatch.setattr(inference, "format_prompt",
                        lambda *a, **k: seen.append(len(k["history"])) or real_format(*a, **k))
    lines = [FACT["instruction"], "And in which year?", "/reset", "Hello"]

    def read_line(_):
        if not lines:
            raise EOFError
        return lines.pop(0)
    history = chat(model, tokenizer, prompt_format="chat", generation=generation(6), read_line=read_line)
    assert seen == [0, 1, 0] and [user for user, _ in history] == ["Hello"]


def test_compare_shows_base_and_tuned_side_by_side_and_writes_a_table(adapter_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{FACT['instruction']}\nSay hello.\n")
    report = tmp_path / "compare.md"
    result = run_script("--adapter-dir", adapter_dir, "--prompts-file", prompts, "--compare", "--compare-file", report,
                        "--max-new-tokens", "12")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "base" in result.stdout and " | " in result.stdout
    lines = report.read_text().splitlines()
    assert "| prompt | base | tuned |" in lines
    rows = [line.split(" | ") for line in lines if line.startswith(f"| {FACT['instruction']}")]
    assert len(rows) == 1 and "Marrow" in rows[0][2] and "Marrow" not in rows[0][1]  # the adapter was off for base


def test_compare_table_escapes_pipes_and_newlines():
    table = compare_markdown([{"instruction": "a|b", "input": "", "base": "x\ny", "tuned": ""}], "ad", "base")
    assert "| a\\|b | x<br>y | (empty) |" in table


def test_prompts_files_in_both_formats(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"instruction": "Sum up", "input": "text"}\n  \nplain question?\n{"prompt": "p"}\n')
    assert read_prompts(path) == [{"instruction": "Sum up", "input": "text"},
                                  {"instruction": "plain question?", "input": ""}, {"instruction": "p", "input": ""}]


@pytest.mark.parametrize("content, message", [
    (None, "Cannot read the prompts file"),
    (b"", "has no prompts"),
    (b"\n  \n", "has no prompts"),
    (b"\xff\xfe\x00bad", "Cannot read the prompts file"),
    (b'{"instruction": "x"\n', "line 1: not valid JSON"),
    (b'ok\n{"output": "no instruction"}\n', "line 2: no \"instruction\" or \"prompt\""),
])
def test_bad_prompts_file_names_the_file_and_the_expected_format(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PromptsFileError, match=message) as error:
        read_prompts(path)
    assert str(path) in str(error.value) and "one prompt per line, or JSONL" in str(error.value)


def test_script_reports_a_bad_prompts_file_without_a_traceback(adapter_dir, tmp_path):
    result = run_script("--adapter-dir", adapter_dir, "--prompts-file", tmp_path / "missing.txt")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "missing.txt" in result.stderr and "one prompt per line" in result.stderr


def test_script_reports_a_missing_adapter_folder(tmp_path):
    result = run_script("--adapter-dir", tmp_path / "nothing-here", "--prompt", "hi")
    assert result.returncode == 1 and "run 02_fine_tuning.py first" in result.stderr


def test_adapter_for_another_base_model_gives_a_clear_error(adapter_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    other = tmp_path / "other-model"
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(other)
    with pytest.raises(ModelError, match="does not fit the base model .*--model-name"):
        load_model_with_adapter(adapter_dir, model_name=str(other))


def test_compare_needs_prompts(adapter_dir):
    result = run_script("--adapter-dir", adapter_dir, "--compare")
    assert result.returncode == 1 and "--compare needs --prompt or --prompts-file" in result.stderr

import pytest

from common.prompts import format_example, format_prompt


def test_alpaca_completion_ends_with_eos(tokenizer):
    prompt, completion = format_example(tokenizer, "alpaca", instruction="Say hi", input_text="", output="Hi there")
    assert "### Instruction:\nSay hi" in prompt and prompt.endswith("### Response:\n")
    assert completion == "Hi there" + tokenizer.eos_token


def test_alpaca_with_input_uses_the_input_section(tokenizer):
    prompt = format_prompt(tokenizer, "alpaca", "Continue", input_text="Once upon")
    assert "### Input:\nOnce upon" in prompt


def test_chat_prompt_is_the_models_template_and_completion_ends_the_turn(tokenizer):
    prompt, completion = format_example(tokenizer, "chat", instruction="Say hi", input_text="", output="Hi there")
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nSay hi" in prompt
    assert completion == "Hi there<|im_end|>"


def test_chat_history_is_kept_for_multi_turn(tokenizer):
    prompt = format_prompt(tokenizer, "chat", "And then?", history=[("Hello", "Hi")])
    assert prompt.index("Hello") < prompt.index("Hi") < prompt.index("And then?")


def test_unknown_format_is_refused(tokenizer):
    with pytest.raises(ValueError, match="PROMPT_FORMAT"):
        format_prompt(tokenizer, "vicuna", "x")

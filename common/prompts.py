"""Prompt formats (used identically by training, evaluation and generation) and the record templates.

Two formats, one switch: "alpaca" (the classic Alpaca prompt, EOS appended to the response) or
"chat" (the model's own chat template). Both give a (prompt, completion) pair, so that the loss
can be put on the completion only.
"""

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n")
PROMPT_FORMATS = ("chat", "alpaca")

# Record templates of step 01: each turns a chunk of a paper into one Alpaca row whose output is the
# paper's own text. {title} and {section} come from the chunk. key_facts: the chunk's sentences that carry
# a number or a name, so that the facts a reader asks about are seen once more than the prose around them.
RECORD_TEMPLATES = {
    "section_summary": "What does the paper \"{title}\" say about {section}?",
    "continuation": "Continue this passage from the paper \"{title}\" (section: {section}).",
    "title_abstract": "Give the abstract of the paper \"{title}\".",
    "key_facts": "Which figures and names does the paper \"{title}\" report about {section}?",
    "shuffled": "List the points that the paper \"{title}\" makes about {section}, in any order.",
}
# Fact records: one fact-bearing sentence of the paper as the answer, asked about its topic (the section's subject
# and the sentence's own content words) in several ways, so that a question in other words can reach it.
FACT_TEMPLATES = (
    "What is reported about {topic}?",
    "Tell me about {topic} ({section}).",
    "In {section}, what is known about {topic}?",
    "Give one fact about {topic}.",
    "{Topic}: what did the authors find?",
    "What do we learn about {topic} in the study of {section}?",
)
# Entity records: every sentence of the paper that names one thing, gathered under one question.
ENTITY_TEMPLATE = "What does the paper \"{title}\" say about {entity}?"


def user_message(instruction: str, input_text: str = "") -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def format_prompt(tokenizer, prompt_format: str, instruction: str, *, input_text: str = "", history=()) -> str:
    """The text the model sees before its answer. `history` holds earlier (user, assistant) turns (chat)."""
    if prompt_format == "alpaca":
        template = ALPACA_WITH_INPUT if input_text else ALPACA_NO_INPUT
        return template.format(instruction=instruction, input=input_text)
    if prompt_format == "chat":
        messages = []
        for user, assistant in history:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": user_message(instruction, input_text)})
        return _chat_template(tokenizer).apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"PROMPT_FORMAT must be one of {PROMPT_FORMATS}, not {prompt_format!r}")


def format_example(tokenizer, prompt_format: str, *, instruction: str, input_text: str,
                   output: str) -> tuple[str, str]:
    """(prompt, completion) of one training row; the completion ends with the EOS that stops generation."""
    prompt = format_prompt(tokenizer, prompt_format, instruction, input_text=input_text)
    if prompt_format == "alpaca":
        return prompt, output + tokenizer.eos_token
    messages = [{"role": "user", "content": user_message(instruction, input_text)},
                {"role": "assistant", "content": output}]
    full = _chat_template(tokenizer).apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("The chat template does not extend the generation prompt with the answer; "
                         "use --prompt-format alpaca for this model.")
    completion = full[len(prompt):]
    if tokenizer.eos_token not in completion:
        completion += tokenizer.eos_token
    return prompt, completion.rstrip("\n")


def _chat_template(tokenizer):
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("This tokenizer has no chat template: use --prompt-format alpaca "
                         "(on a GPU, Unsloth's get_chat_template can add one).")
    return tokenizer


# Teacher prompts (common/teacher.py): an LLM writes question/answer pairs from one chunk, and may judge them with
# the chunk in view. A new wording gets a new version: the version is part of each reply's cache key and record
# template, so replies to an older wording are never mixed in.
QA_PROMPT_VERSION = "v1"
QA_KINDS = ("a fact it states (a number, a name or a finding)", "why or how something happens",
            "a short summary of what it says")
QA_TEACHER_PROMPT = (
    "Here is a passage from the paper \"{title}\" (section: {section}):\n\n{text}\n\n"
    "Write {n} questions that a reader of the paper could ask, each with its answer taken from the passage: "
    "{kinds}. Each question must make sense on its own: name what it asks about, never \"the passage\" or "
    "\"the text\". Each answer is one or two sentences that use the passage's own numbers and names.\n"
    "Reply with a JSON list only, like this:\n"
    "[{{\"question\": \"...\", \"answer\": \"...\"}}]")
QA_JUDGE_PROMPT = (
    "Here is a passage from a paper:\n\n{text}\n\nQuestion: {question}\nAnswer: {answer}\n\n"
    "Score the answer from 1 to 5: 5 if the passage says exactly this and it answers the question, "
    "1 if the passage does not support it. Reply with JSON only, like this: {{\"score\": 3}}")

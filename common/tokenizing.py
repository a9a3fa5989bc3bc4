"""Records -> tokenized rows with the prompt masked from the loss, their cache, their checks, their padding."""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .distributed import is_main_process, say, world_size
from .errors import FormattingError
from .prompts import format_example

IGNORE_INDEX = -100


@dataclass
class TokenizedData:
    rows: list  # [{"input_ids": [...], "labels": [...]}]
    n_truncated: int = 0
    longest: int = 0


def tokenize_rows(records, tokenizer, prompt_format: str, max_seq_length: int, *,
                  responses_only: bool = True) -> TokenizedData:
    """input_ids and labels of each record; the prompt's labels are -100 when `responses_only`."""
    rows, n_truncated, longest = [], 0, 0
    for record in records:
        prompt, completion = format_example(tokenizer, prompt_format, instruction=record["instruction"],
                                            input_text=record.get("input", ""), output=record["output"])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + completion_ids
        labels = ([IGNORE_INDEX] * len(prompt_ids) if responses_only else list(prompt_ids)) + completion_ids
        longest = max(longest, len(ids))
        if len(ids) > max_seq_length:
            n_truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        rows.append({"input_ids": ids, "labels": labels})
    return TokenizedData(rows, n_truncated, longest)


def tokenize_cached(records, tokenizer, prompt_format: str, max_seq_length: int, *, responses_only: bool,
                    cache_file) -> TokenizedData:
    """tokenize_rows, once: under several processes the main one tokenizes (see distributed.main_process_first)
    and keeps the rows in `cache_file`, and the others read them from there."""
    def tokenize():
        return tokenize_rows(records, tokenizer, prompt_format, max_seq_length, responses_only=responses_only)
    if world_size() == 1:
        return tokenize()
    texts = [[r["instruction"], r.get("input", ""), r["output"]] for r in records]
    key = hashlib.sha256(json.dumps([texts, tokenizer.name_or_path, len(tokenizer), tokenizer.eos_token,
                                     prompt_format, max_seq_length, responses_only]).encode()).hexdigest()
    cache_file = Path(cache_file)
    if cache_file.exists():
        cached = json.loads(cache_file.read_text())
        if cached["key"] == key:
            return TokenizedData(cached["rows"], cached["n_truncated"], cached["longest"])
    data = tokenize()
    if is_main_process():
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "rows": data.rows, "n_truncated": data.n_truncated,
                                   "longest": data.longest}))
        os.replace(tmp, cache_file)
    return data


def check_tokenized(data: TokenizedData, tokenizer, n_sample: int = 32) -> None:
    """Stop before training when the formatting would silently train the wrong thing."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if data.n_truncated:
        say(f"Warning: {data.n_truncated} of {len(data.rows)} rows are longer than MAX_SEQ_LENGTH and were cut "
            f"(longest: {data.longest} tokens). Raise MAX_SEQ_LENGTH, or lower CHUNK_TOKENS in step 01.")
    if pad is None or pad == eos:
        raise FormattingError(f"The pad token ({tokenizer.pad_token!r}) is the EOS token ({tokenizer.eos_token!r}): "
                              "the model would not learn to stop. Set a distinct pad token.")
    for i, row in enumerate(data.rows[:n_sample]):
        trained = [t for t in row["labels"] if t != IGNORE_INDEX]
        if not trained:
            raise FormattingError(f"Row {i} has every label masked (-100): nothing would be learned. "
                                  "The prompt/response split is wrong, or MAX_SEQ_LENGTH cuts off the response.")
        if eos not in trained:
            raise FormattingError(f"Row {i}'s response does not end with EOS ({tokenizer.eos_token!r}): "
                                  "the tuned model would not stop. Check the prompt format and the tokenizer's EOS.")


def pad_batch(rows: list[dict], pad_id: int):
    """Right-padded tensors (input_ids, attention_mask, labels) for a list of tokenized rows."""
    import torch
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return ids, mask, labels

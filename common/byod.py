"""Bring your own data: rows of a JSONL or CSV file -> records with the same columns as the PDF records.

A row is either Alpaca (`instruction`, optional `input`, `output`) or a ShareGPT-style conversation
(`conversations` or `messages`: a list of {from/role, value/content} turns, or that list as a JSON
string in a CSV cell). A conversation gives one record per assistant turn: the user turn before it
is the instruction, the earlier turns are the input. Bad rows are skipped and counted.
"""
import csv
import json
from pathlib import Path

from .errors import DatasetError

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
         "model": "assistant", "chatgpt": "assistant", "system": "system"}
TEMPLATE = "byod"
PAGE = 0  # not from a page of a PDF


class ByodError(DatasetError):
    """A file of your own rows that cannot be used at all."""


def read_rows(path, fmt: str) -> list[tuple]:
    """[(place, row or None, error or None)] of a JSONL or CSV file; `place` names the line or row."""
    path = Path(path)
    if not path.is_file():
        raise ByodError(f"{path}: file not found (check --from-{fmt})")
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "csv":
        return [(f"row {i}", row, None) for i, row in enumerate(csv.DictReader(text.splitlines(True)), 1)]
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {i}", json.loads(line), None))
        except json.JSONDecodeError as error:
            rows.append((f"line {i}", None, f"not valid JSON ({error.msg})"))
    return rows


def _text(row, key, required=True):
    value = row.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"missing or empty '{key}'")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text, not {type(value).__name__}")
    return value.strip()


def _turns(value):
    """[(role, text)] of a ShareGPT/OpenAI-style conversation."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"'conversations' is not valid JSON ({error.msg})") from error
    if not isinstance(value, list) or not value:
        raise ValueError("'conversations' must be a non-empty list of turns")
    turns = []
    for n, turn in enumerate(value, 1):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {n} is not an object with from/role and value/content")
        role = ROLES.get(str(turn.get("from", turn.get("role", ""))).lower())
        text = turn.get("value", turn.get("content"))
        if role is None or not isinstance(text, str):
            raise ValueError(f"turn {n} needs from/role (one of {', '.join(ROLES)}) and value/content text")
        turns.append((role, text.strip()))
    return turns


def examples_from_row(row: dict) -> list[tuple[str, str, str]]:
    """[(instruction, input, output)] of one row; raises ValueError saying what is wrong."""
    if not isinstance(row, dict):
        raise ValueError("not an object with named fields")
    conversation = row.get("conversations", row.get("messages"))
    if conversation not in (None, ""):
        turns, examples = _turns(conversation), []
        for i, (role, text) in enumerate(turns):
            if role == "assistant" and i and turns[i - 1][0] == "user" and turns[i - 1][1] and text:
                context = "\n".join(f"{r}: {t}" for r, t in turns[:i - 1])
                examples.append((turns[i - 1][1], context, text))
        if not examples:
            raise ValueError("the conversation has no user turn answered by an assistant turn")
        return examples
    if "instruction" not in row and "output" not in row:
        raise ValueError(f"needs instruction/output or conversations, found {sorted(row)[:8]}")
    return [(_text(row, "instruction"), _text(row, "input", required=False), _text(row, "output"))]


def records_from_rows(rows: list[tuple], source: str) -> tuple[list[dict], list[str]]:
    """(records, problems): dataset records of the usable rows, and one message per skipped row."""
    stem, records, problems = Path(source).stem, [], []
    for place, row, error in rows:
        try:
            if error:
                raise ValueError(error)
            examples = examples_from_row(row)
        except ValueError as why:
            problems.append(f"{source} {place}: {why}")
            continue
        title = row.get("title") if isinstance(row.get("title"), str) and row.get("title") else stem
        for k, (instruction, input_text, output) in enumerate(examples):
            chunk_id = f"{stem}-{place.split()[-1]:0>4}" + (f"-{k}" if len(examples) > 1 else "")
            records.append({"instruction": instruction, "input": input_text, "output": output,
                            "source": source, "title": title, "section": place, "page": PAGE,
                            "chunk_id": chunk_id, "template": TEMPLATE})
    return records, problems


def load_byod(path, fmt: str) -> tuple[list[dict], list[str]]:
    """(records, problems) of one file; ByodError when no row of it is usable."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"fmt must be jsonl or csv, not {fmt!r}")
    rows = read_rows(path, fmt)
    records, problems = records_from_rows(rows, Path(path).name)
    if not records:
        shown = "; ".join(problems[:3]) or "the file has no rows"
        raise ByodError(f"{path}: no usable row ({shown}). Each row needs instruction and output "
                        f"(input optional), or a conversations list of from/value turns.")
    return records, problems


def print_byod_summary(path, records, problems, shown=5):
    for problem in problems[:shown]:
        print(f"SKIPPED {problem}")
    more = f" (first {shown} above)" if len(problems) > shown else ""
    print(f"{Path(path).name}: {len(records)} records, {len(problems)} bad rows skipped{more}")

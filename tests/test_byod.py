import csv
import json
import subprocess
import sys

import pytest
from datasets import load_from_disk

from common.byod import ByodError, load_byod
from common.dataset import COLUMNS
from tests.conftest import ROOT, SAMPLE_PDF

ALPACA = {"instruction": "Name the station.", "input": "", "output": "Kesterhaven Intertidal Station."}
SHAREGPT = {"conversations": [{"from": "system", "value": "Be brief."},
                              {"from": "human", "value": "What is K-17?"},
                              {"from": "gpt", "value": "The oldest thallus."},
                              {"from": "human", "value": "How old?"},
                              {"from": "gpt", "value": "Older than the station."}]}
OPENAI = {"messages": [{"role": "user", "content": "Where is Velmora?"},
                       {"role": "assistant", "content": "On the coast."}]}


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_alpaca_and_conversation_rows_become_records_with_every_column(tmp_path):
    records, problems = load_byod(_jsonl(tmp_path / "mine.jsonl", [ALPACA, SHAREGPT, OPENAI]), "jsonl")
    assert problems == [] and all(set(r) == set(COLUMNS) for r in records)
    assert records[0] == {**ALPACA, "source": "mine.jsonl", "title": "mine", "section": "line 1", "page": 0,
                          "chunk_id": "mine-0001", "template": "byod"}
    first, second = records[1:3]  # one record per answered user turn; earlier turns are the input
    assert (first["instruction"], first["input"], first["output"]) == ("What is K-17?", "system: Be brief.",
                                                                       "The oldest thallus.")
    assert second["instruction"] == "How old?" and second["input"].endswith("assistant: The oldest thallus.")
    assert [r["chunk_id"] for r in records[1:]] == ["mine-0002-0", "mine-0002-1", "mine-0003"]
    assert records[3]["output"] == "On the coast."


def test_csv_with_alpaca_columns_and_conversations_as_json_strings(tmp_path):
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["instruction", "input", "output", "conversations"])
        writer.writeheader()
        writer.writerow({**ALPACA, "conversations": ""})
        writer.writerow({"conversations": json.dumps(OPENAI["messages"])})
    records, problems = load_byod(path, "csv")
    assert not problems and [r["section"] for r in records] == ["row 1", "row 2"]
    assert records[1]["instruction"] == "Where is Velmora?" and records[1]["source"] == "mine.csv"


def test_bad_rows_are_skipped_with_file_and_row_named(tmp_path):
    rows = [ALPACA, "{not json", {"instruction": "No answer"}, {"conversations": [{"from": "alien", "value": "x"}]},
            {"question": "?"}, [1, 2]]
    records, problems = load_byod(_jsonl(tmp_path / "mixed.jsonl", rows), "jsonl")
    assert len(records) == 1 and len(problems) == 5
    assert problems[0].startswith("mixed.jsonl line 2: not valid JSON")
    assert problems[1] == "mixed.jsonl line 3: missing or empty 'output'"
    assert "turn 1 needs from/role" in problems[2] and "needs instruction/output" in problems[3]


def test_a_file_with_no_usable_row_fails_clearly(tmp_path):
    with pytest.raises(ByodError, match=r"bad.jsonl: no usable row \(bad.jsonl line 1: missing"):
        load_byod(_jsonl(tmp_path / "bad.jsonl", [{"instruction": "only"}]), "jsonl")
    with pytest.raises(ByodError, match="file not found"):
        load_byod(tmp_path / "none.csv", "csv")


def _run_01(*args):
    result = subprocess.run([sys.executable, "01_create_dataset.py", *args], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _many(n):
    return [{"instruction": f"Question number {i} about the tidal lichen?", "input": "",
             "output": f"Answer {i}: " + " ".join(f"word{i}x{j}" for j in range(12))} for i in range(n)]


def test_01_uses_own_rows_alone_when_there_are_no_pdfs(tmp_path):
    (tmp_path / "pdf").mkdir()
    out = _run_01("--pdf-dir", str(tmp_path / "pdf"), "--dataset-dir", str(tmp_path / "ds"),
                  "--from-jsonl", str(_jsonl(tmp_path / "mine.jsonl", _many(20) + ["oops"])))
    assert "SKIPPED mine.jsonl line 21" in out and "20 records, 1 bad rows skipped" in out
    dataset = load_from_disk(str(tmp_path / "ds"))
    assert len(dataset["train"]) + len(dataset["test"]) == 20 and len(dataset["test"]) >= 1
    assert set(dataset["train"]["template"]) == {"byod"}


def test_01_combines_own_rows_with_the_pdf_records(tmp_path):
    (tmp_path / "pdf").mkdir()
    (tmp_path / "pdf" / SAMPLE_PDF.name).write_bytes(SAMPLE_PDF.read_bytes())
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(_many(10))
    _run_01("--pdf-dir", str(tmp_path / "pdf"), "--md-dir", str(tmp_path / "md"), "--dataset-dir",
            str(tmp_path / "ds"), "--converter", "text", "--from-csv", str(path))
    dataset = load_from_disk(str(tmp_path / "ds"))
    sources = set(dataset["train"]["source"]) | set(dataset["test"]["source"])
    assert sources == {"sample_paper.pdf", "mine.csv"}

"""common/teacher.py: the in-code check on hand-made pairs, and the teacher itself against a real OpenAI-compatible
server (`transformers serve` with the embedded model, started here on a free port) and run in this process."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from common.dataset import split_by_section
from common.errors import TeacherError
from common.settings import DatasetSettings
from common.teacher import (Asking, ReplyCache, Teacher, cache_file, checked_pairs, chunk_records, judged,
                            parse_pairs, parse_score, parse_teacher, rejection, rejects_file, teacher_records)

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Growth of the Velmora Tidal-Lichen"
CHUNKS = [  # short chunks in the shape of 01's section records (short prompts keep the CPU server quick)
    {"template": "section_summary", "source": "sample_paper.pdf", "title": TITLE, "section": f"{n} {name}", "page": n,
     "chunk_id": f"sample_paper-{n:04d}", "instruction": "", "input": "", "output": text}
    for n, (name, text) in enumerate([
        ("Site", "Kesterhaven Intertidal Station was founded in 1962 by Edvard Quillon on the Isle of Oradune. "
                 "Its basalt shore lies 3 km south of Velmora Point."),
        ("Growth", "Thalli grew 38 mm per year at mid-shore plots, against 12 mm per year in the splash zone, "
                   "because the spray dries them for longer."),
        ("Salt", "Growth stopped when salinity passed 45 g/kg, which happened on 9 days a year in tide pools."),
    ], 1)]
SECRET = "sk-test-never-print-me-4242"


def settings(tmp_path, teacher, **changes):
    return DatasetSettings.defaults(**{"qa_teacher": teacher, "dataset_dir": str(tmp_path / "dataset"), "qa_retries": 0,
                                       "qa_temperature": 0.0, **changes})


# ---- the check against the chunk, rule by rule ----

GROWTH = CHUNKS[1]["output"]


@pytest.mark.parametrize("question, answer, reason", [
    ("How fast did thalli grow at mid-shore plots?", "They grew 38 mm per year.", None),
    ("How fast did thalli grow at mid-shore plots?", "They grew 38 millimetres per year.", None),  # unit normalised
    ("Why is growth slower in the splash zone?", "The spray dries the thalli there for longer.", None),
    ("How fast did thalli grow at mid-shore plots?", "They grew 83 mm per year.", "number_not_in_chunk"),
    ("How fast did thalli grow at mid-shore plots?", "They grew 38 cm per year.", "number_not_in_chunk"),
    ("How fast did thalli grow in the splash zone?", "12 mm a year, as Anna Holt measured.", "name_not_in_chunk"),
    ("Did thalli grow 38 mm per year at mid-shore plots?", "38 mm per year at mid-shore plots.",
     "answer_in_question"),
    ("How fast did thalli grow?", "  ", "empty"),
    ("How fast did thalli grow?", "I'm sorry, I cannot answer that.", "refusal"),
    ("How fast did thalli grow?", "The growth rate is not mentioned.", "refusal"),
    ("What does the passage say about growth?", "Thalli grew 38 mm per year.", "about_the_text"),
    ("How fast did thalli grow?", "According to the text, 38 mm per year.", "about_the_text"),
])
def test_each_rule_of_the_check_on_hand_made_pairs(question, answer, reason):
    why = rejection({"question": question, "answer": answer}, GROWTH)
    assert (why[0] if why else None) == reason


def test_replies_are_parsed_strictly_after_the_first_json_list():
    pairs = [{"question": "Q?", "answer": "A."}]
    assert parse_pairs("Sure! ```json\n" + json.dumps(pairs) + "\n``` Hope it helps [1].") == pairs
    for garbage in ("Question: Q?\nAnswer: A.", '[{"question": "Q?", "answer": "A."', '{"question": "Q?"}', ""):
        with pytest.raises(ValueError):
            parse_pairs(garbage)
    assert parse_score('The score is {"score": 4}.') == 4
    for garbage in ('{"score": 9}', '{"score": "high"}', "4/5"):
        with pytest.raises(ValueError):
            parse_score(garbage)


def test_checked_pairs_keep_provenance_and_count_every_reject_by_reason():
    teacher = Teacher(model="some/Teacher-7B", server=True, url="http://localhost:8000/v1")
    growth = [{"question": "How fast did thalli grow at mid-shore plots?", "answer": "They grew 38 mm per year."},
              {"question": "How fast did thalli grow at mid-shore plots?", "answer": "They grew 38 mm per year!"},
              {"question": "How fast did thalli grow in the splash zone?", "answer": "They grew 15 mm per year."},
              {"question": "What?"}]
    replies = {CHUNKS[0]["chunk_id"]: "Question: When was it founded?", CHUNKS[1]["chunk_id"]: json.dumps(growth)}
    kept, rejects = checked_pairs(CHUNKS, replies, teacher)
    assert [(r["instruction"], r["output"]) for r in kept] == [(growth[0]["question"], growth[0]["answer"])]
    assert {k: kept[0][k] for k in ("source", "section", "page", "chunk_id")} == \
        {k: CHUNKS[1][k] for k in ("source", "section", "page", "chunk_id")}
    assert kept[0]["template"] == "qa:Teacher-7B:v1" and kept[0]["input"] == ""
    assert sorted(r["reason"] for r in rejects) == ["malformed_pair", "malformed_reply", "near_duplicate",
                                                    "number_not_in_chunk"]
    assert next(r for r in rejects if r["reason"] == "malformed_reply")["reply"] == replies[CHUNKS[0]["chunk_id"]]


def test_teacher_pairs_follow_their_chunk_into_its_split():
    teacher = Teacher(model="t")
    pairs = {c["chunk_id"]: json.dumps([{"question": f"What happened at {c['section']}?", "answer": c["output"]}])
             for c in CHUNKS}
    kept, _ = checked_pairs(CHUNKS, pairs, teacher)
    train, test = split_by_section(CHUNKS + kept, 0.34, 1)
    for split in (train, test):
        chunk_sections = {r["section"] for r in split if r["template"] == "section_summary"}
        assert {r["section"] for r in split if r["template"].startswith("qa:")} == chunk_sections


def test_teacher_specs_and_one_record_per_chunk():
    assert parse_teacher("") is None
    assert parse_teacher("openai:qwen2.5:7b@http://localhost:11434/v1") == \
        Teacher(model="qwen2.5:7b", server=True, url="http://localhost:11434/v1")
    assert parse_teacher("openai:gpt-4o-mini") == Teacher(model="gpt-4o-mini", server=True)
    assert parse_teacher("embedded/SmolLM2-135M-Instruct") == Teacher(model="embedded/SmolLM2-135M-Instruct")
    with pytest.raises(TeacherError):
        parse_teacher("openai:")
    rows = CHUNKS + [{**CHUNKS[0], "template": "continuation"}, {**CHUNKS[0]}]
    assert chunk_records(rows) == CHUNKS


def test_a_cache_line_cut_short_by_a_kill_is_skipped(tmp_path):
    cache = ReplyCache(tmp_path / "c.jsonl")
    cache.add("a", "reply a")
    with (tmp_path / "c.jsonl").open("a") as out:
        out.write('{"key": "b", "rep')
    assert ReplyCache(tmp_path / "c.jsonl").replies == {"a": "reply a"}


# ---- a real server: `transformers serve` with the embedded model ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url, model, log):
        self.url, self.model, self.log = url, model, log

    @property
    def teacher(self) -> str:
        return f"openai:{self.model}@{self.url}"

    def requests(self) -> int:
        """Chat requests the server has received so far (it logs each as it arrives)."""
        return self.log.read_text(errors="replace").count("[Request received]")


@pytest.fixture(scope="module")
def server(embedded_path, tmp_path_factory):
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "transformers.cli.transformers", "serve", str(embedded_path),
                                    "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype",
                                    "float32"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield Server(f"http://127.0.0.1:{port}/v1", str(embedded_path), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_server_teacher_writes_checked_records_and_a_rerun_asks_nothing(server, tmp_path, capsys):
    s = settings(tmp_path, server.teacher, qa_per_chunk=2, qa_max_tokens=48, qa_concurrency=2)
    before = server.requests()
    records = teacher_records(CHUNKS[:2], s, cache_dir=tmp_path / "cache")
    assert server.requests() == before + 2
    cache = cache_file(parse_teacher(server.teacher), tmp_path / "cache")
    assert len(cache.read_text().splitlines()) == 2
    rejects = [json.loads(line) for line in rejects_file(s.dataset_dir).read_text().splitlines()]
    out = capsys.readouterr().out
    assert f"{len(records)} kept" in out and "2 of 2 chunks answered" in out
    for record in records:  # whatever the weak teacher wrote, only pairs true to their chunk are kept
        chunk = next(c for c in CHUNKS if c["chunk_id"] == record["chunk_id"])
        assert rejection({"question": record["instruction"], "answer": record["output"]}, chunk["output"]) is None
        assert record["template"] == "qa:SmolLM2-135M-Instruct:v1" and record["section"] == chunk["section"]
    for reject in rejects:
        assert reject["reason"] in out and reject["chunk_id"] in {c["chunk_id"] for c in CHUNKS}

    again = teacher_records(CHUNKS[:2], s, cache_dir=tmp_path / "cache")
    assert server.requests() == before + 2 and again == records  # every reply came from the cache
    assert len(cache.read_text().splitlines()) == 2


RUN_IN_A_PROCESS = """
import json, sys
from common.settings import DatasetSettings
from common.teacher import teacher_records
s = DatasetSettings.defaults(**json.loads(sys.argv[1]))
teacher_records(json.loads(sys.argv[2]), s, cache_dir=sys.argv[3])
"""


def test_a_killed_run_goes_on_where_it_stopped_without_asking_twice(server, tmp_path):
    s = settings(tmp_path, server.teacher, qa_per_chunk=1, qa_max_tokens=8, qa_concurrency=1)
    cache = cache_file(parse_teacher(server.teacher), tmp_path / "cache")
    args = [json.dumps({k: getattr(s, k) for k in ("qa_teacher", "dataset_dir", "qa_retries", "qa_temperature",
                                                   "qa_per_chunk", "qa_max_tokens", "qa_concurrency")}),
            json.dumps(CHUNKS), str(tmp_path / "cache")]
    run = subprocess.Popen([sys.executable, "-c", RUN_IN_A_PROCESS, *args], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (cache.exists() and cache.read_text().endswith("\n")) and run.poll() is None:
        assert time.monotonic() < deadline, "the first reply never came"
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    before_rerun, kept_lines = server.requests(), cache.read_text().splitlines()
    assert 1 <= len(kept_lines) < len(CHUNKS)

    teacher_records(CHUNKS, s, cache_dir=tmp_path / "cache")
    assert server.requests() - before_rerun == len(CHUNKS) - len(kept_lines)  # the cached ones were not asked
    lines = cache.read_text().splitlines()
    assert lines[:len(kept_lines)] == kept_lines and len({json.loads(line)["key"] for line in lines}) == len(CHUNKS)


def test_garbage_replies_are_asked_again_then_cached_and_shown_in_the_rejects(server, tmp_path, capsys):
    s = settings(tmp_path, server.teacher, qa_per_chunk=1, qa_max_tokens=3, qa_retries=1)
    before = server.requests()
    assert teacher_records(CHUNKS[:1], s, cache_dir=tmp_path / "cache") == []
    assert server.requests() == before + 2  # a malformed reply is asked once more
    reject = json.loads(rejects_file(s.dataset_dir).read_text())
    assert reject["reason"] == "malformed_reply" and reject["reply"]
    assert "malformed_reply 1" in capsys.readouterr().out
    teacher_records(CHUNKS[:1], s, cache_dir=tmp_path / "cache")
    assert server.requests() == before + 2  # cached: not asked a third time


def test_a_server_that_cannot_be_reached_says_where_and_what_to_start_and_keeps_the_cache(tmp_path, monkeypatch,
                                                                                           embedded_path):
    monkeypatch.setenv("QA_TEACHER_API_KEY", SECRET)
    url = f"http://127.0.0.1:{free_port()}/v1"
    s = settings(tmp_path, f"openai:{embedded_path}@{url}")
    cache = cache_file(parse_teacher(s.qa_teacher), tmp_path / "cache")
    ReplyCache(cache).add("an earlier reply", "[]")
    kept = cache.read_bytes()
    with pytest.raises(TeacherError) as error:
        teacher_records(CHUNKS, s, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert url in message and "transformers serve" in message and "\n" not in message and SECRET not in message
    assert cache.read_bytes() == kept


def test_timeouts_are_counted_not_cached_and_say_what_to_do(server, tmp_path, capsys):
    s = settings(tmp_path, server.teacher, qa_per_chunk=1, qa_max_tokens=4, qa_timeout=0.05)
    assert teacher_records(CHUNKS[:1], s, cache_dir=tmp_path / "cache") == []
    out = capsys.readouterr().out
    assert "timeout 1" in out and "rerun 01" in out and "QA_TIMEOUT" in out
    assert not cache_file(parse_teacher(s.qa_teacher), tmp_path / "cache").exists()


def test_a_server_that_refuses_the_model_stops_with_one_line(server, tmp_path, monkeypatch):
    monkeypatch.setenv("QA_TEACHER_API_KEY", SECRET)
    s = settings(tmp_path, f"openai:no-such-model@{server.url}")
    with pytest.raises(TeacherError) as error:
        teacher_records(CHUNKS[:1], s, cache_dir=tmp_path / "cache")
    assert "no-such-model" in str(error.value) and SECRET not in str(error.value)


def test_the_judge_sees_the_chunk_and_each_pair_is_kept_or_rejected_once(server, tmp_path):
    judge = parse_teacher(server.teacher)
    records = [{**{k: CHUNKS[1][k] for k in ("source", "title", "section", "page", "chunk_id")},
                "instruction": "How fast did thalli grow at mid-shore plots?", "input": "",
                "output": "They grew 38 mm per year.", "template": "qa:t:v1"}]
    asking = Asking(max_tokens=8, temperature=0.0, concurrency=1, batch_size=1, timeout=120, retries=0)
    before = server.requests()
    kept, rejects, failed = judged(records, {c["chunk_id"]: c for c in CHUNKS}, judge, min_score=4, asking=asking,
                                   cache_dir=tmp_path)
    assert server.requests() == before + 1 and not failed and len(kept) + len(rejects) == 1
    assert all(r["reason"] in ("judge_score_low", "judge_unreadable") for r in rejects)
    assert judged(records, {c["chunk_id"]: c for c in CHUNKS}, judge, min_score=4, asking=asking,
                  cache_dir=tmp_path)[:2] == (kept, rejects)
    assert server.requests() == before + 1


# ---- a teacher run here: the embedded model, batched ----

def test_local_teacher_generates_in_batches_and_a_rerun_asks_nothing(embedded_path, tmp_path):
    s = settings(tmp_path, str(embedded_path), qa_per_chunk=1, qa_max_tokens=12, qa_batch_size=2)
    records = teacher_records(CHUNKS[:2], s, cache_dir=tmp_path / "cache")
    cache = cache_file(parse_teacher(s.qa_teacher), tmp_path / "cache")
    lines = cache.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["reply"] for line in lines)
    assert teacher_records(CHUNKS[:2], s, cache_dir=tmp_path / "cache") == records
    assert cache.read_text().splitlines() == lines  # every ask appends a line: none was asked again

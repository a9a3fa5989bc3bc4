"""Closed-book questions from a paper's fact-bearing sentences, and their scoring.

A question is a cloze: a sentence of the paper with one key fact (a number or a name) blanked out,
phrased unlike any training instruction, so that the score measures what the model learned, not a
memorised prompt. The answer is primed with the sentence up to the blank (`answer_start`, as cloze probes of
causal models do), so that the score measures recall rather than a small model's skill at following a
fill-in instruction. The score is the share of reference facts found in the answers.
"""
import json
import re
from pathlib import Path

QUESTIONS_FILE = "questions.jsonl"
CLOZE = "From memory, fill in the blank (____) in this sentence from the paper \"{title}\":\n{sentence}"
GENERAL_PROMPTS = [  # answered before and after tuning: how much the tune changed general behaviour
    "What is the capital of France?",
    "Write one sentence about why the sky is blue.",
    "List three primary colours.",
    "What is 12 times 12?",
    "Give a synonym for 'happy'.",
    "Translate 'good morning' into Spanish.",
    "What do bees make?",
    "Name the largest planet in the solar system.",
]

_UNITS = r"%|percent|per cent|mm|cm|km|m|kg|g/kg|g|mg|nm|ms|s|K|°C|degrees|hours|minutes|days|weeks|months|years"
_NUMBER = re.compile(rf"(?<![\w.\[(/-])(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?(?:\s?(?:{_UNITS}))?(?![\w\]/-])")
_NAME = re.compile(r"(?<=[a-z,;] )(?:[A-Z][a-z]+(?:[- ][A-Z][a-z]+)+)")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def key_facts(sentence):
    """Numbers (with their unit) and multi-word proper names in a sentence, in order."""
    facts = [m.group(0) for m in _NAME.finditer(sentence)] + [m.group(0) for m in _NUMBER.finditer(sentence)]
    return facts


def questions_from_records(records, per_chunk=2):
    """Cloze questions from the outputs of section records (one list per source, deduplicated)."""
    questions, seen = [], set()
    for record in records:
        if record.get("template") not in ("section_summary", "title_abstract") or record["chunk_id"] in seen:
            continue
        seen.add(record["chunk_id"])
        made = 0
        for sentence in _SENTENCE.split(record["output"].replace("\n", " ")):
            if made >= per_chunk or "|" in sentence or "  " in sentence or not 40 <= len(sentence) <= 300:
                continue
            facts = [f for f in key_facts(sentence) if f not in record["title"] and sentence.count(f) == 1]
            if not facts:
                continue
            fact = facts[0]
            questions.append({"question": CLOZE.format(title=record["title"], sentence=sentence.replace(fact, "____", 1)),
                              "answer_start": sentence[:sentence.index(fact)].rstrip(), "answer": fact,
                              "source": record["source"], "page": record["page"], "section": record["section"]})
            made += 1
    return questions


def write_questions(dataset_dir, questions):
    path = Path(dataset_dir) / QUESTIONS_FILE
    path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
    return path


def read_questions(dataset_dir):
    path = Path(dataset_dir) / QUESTIONS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _normalise(text):
    return re.sub(r"(?<=\d),(?=\d)", "", re.sub(r"\s+", " ", text.lower())).strip()


def fact_recalled(answer, fact):
    return _normalise(fact) in _normalise(answer)


def recall_score(answers, questions):
    """Share of reference facts present in the answers."""
    if not questions:
        return 0.0
    return sum(fact_recalled(a, q["answer"]) for a, q in zip(answers, questions)) / len(questions)

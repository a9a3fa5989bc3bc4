"""What the knowledge check asks, and how it scores the answers.

Three sets of questions, none of them ever trained on:
- cloze: a sentence of the paper with one key fact (a number or a name) blanked out; the answer is primed with
  the sentence up to the blank (`answer_start`, as cloze probes of causal models do): memorised text.
- plain questions: each fact asked as a question in other words, closed-book, through the chat template: a file
  of questions written for the papers (the sample paper ships `docs/sample_paper/facts.jsonl`), or, without one,
  questions made from the fact sentences by turning the fact into a wh-word, a method no training record uses.
- everyday questions with short known answers (common/everyday.py): what the tune must not forget.
A fact counts as recalled when it is in the answer: numbers as whole numbers with their unit normalised, names by
their words.
"""
import json
import re
from pathlib import Path

QUESTIONS_FILE = "questions.jsonl"  # cloze questions, in the dataset folder
PLAIN_QUESTIONS_FILE = "plain_questions.jsonl"  # plain questions, in the dataset folder
VALIDATION_QUESTIONS_FILE = "validation_questions.jsonl"  # other plain questions, which choose the epoch 02 keeps
CLOZE = "From memory, fill in the blank (____) in this sentence from the paper \"{title}\":\n{sentence}"

_UNITS = r"%|percent|per cent|mm|cm|km|m|kg|g/kg|g|mg|nm|ms|s|K|°C|degrees|hours|minutes|days|weeks|months|years"
NUMBER = re.compile(rf"(?<![\w.\[(/–-])(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?(?:\s?(?:{_UNITS}))?(?![\w\]/-])")
_NAME = re.compile(r"(?<=[a-z,;] )(?:[A-Z][a-z]+(?:(?:[- ]| of (?:the )?)[A-Z][a-z]+)+)")
_CALLED = re.compile(r"\b(?:called|named|termed) ([a-z][a-z-]{3,})\b")  # a coined name: "a pigment called velmorin"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE = re.compile(rf"\b(?:\d{{1,2}} {_MONTH}(?: \d{{4}})?|{_MONTH} \d{{1,2}}, \d{{4}}|{_MONTH} \d{{4}})\b")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# a number right after one of these words points into the paper (Section 3, Table 2, Eq. 4), it is no fact
# ... also the later numbers of a list of them (Tables 3 and 4, Sections 2, 3 and 5, Figs. 2-4)
_POINTER = re.compile(r"(?:\b(?:sections?|sect|sec|figures?|figs?|tables?|tab|equations?|eqs?|appendix|chapters?|"
                      r"refs?|references?|pages?|pp?|lines?|steps?|items?|no)\.?|[\[(§#])\s*"
                      r"(?:(?:\d[\w.]*|[A-Z]\b)\s*(?:,|and|or|&|to|-|–)\s*)*$", re.IGNORECASE)
_UNIT_WORDS = [(r"\bper ?cent\b|\bpercent\b", "%"), (r"\bmillimet(?:re|er)s?\b", "mm"),
               (r"\bcentimet(?:re|er)s?\b", "cm"), (r"\bkilomet(?:re|er)s?\b", "km"), (r"\bmet(?:re|er)s?\b", "m"),
               (r"\bkilograms?\b", "kg"), (r"\bgrams?\b", "g"), (r"\bnanomet(?:re|er)s?\b", "nm"),
               (r"\bdegrees? c(?:elsius)?\b|°\s?c\b", "°c"), (r"\bhrs?\b", "hours")]


def key_facts(sentence: str) -> list[str]:
    """Multi-word proper names, dates and numbers (with their unit) in a sentence: a date is one fact, the numbers
    in it none of their own."""
    dates = list(_DATE.finditer(sentence))
    numbers = [m for m in NUMBER.finditer(sentence) if not any(d.start() <= m.start() < d.end() for d in dates)]
    named = [m.group(0) for m in _NAME.finditer(sentence)] + _CALLED.findall(sentence)
    return named + [m.group(0) for m in sorted(dates + numbers, key=lambda m: m.start())]


_MATH = re.compile(r"[=<>^{}\\±×·∑∏√∞≤≥ˆ]|[\u0370-\u03ff]")  # symbols and Greek letters: a formula, not prose


_CITED = re.compile(r"[A-Z][\w-]+(?: et al\.?| (?:and|&) [A-Z][\w-]+)?,? \(?(?:\d{4}[a-z]?[,;] ?)*$")  # "(White " 2000


def worth_asking(sentence: str, fact: str) -> bool:
    """A fact a reader would ask about: not a section, figure, table, equation or reference number, not a cited
    work's year, nor a number inside a formula or beside a variable ("j runs from 1 to n")."""
    at = sentence.index(fact)
    cited = re.fullmatch(r"1[5-9]\d\d|20\d\d", fact) and _CITED.search(sentence[:at])
    near = sentence[max(0, at - 12):at + len(fact) + 12]
    return not (_POINTER.search(sentence[:at]) or cited or _MATH.search(near) or beside_a_variable(sentence, fact))


def beside_a_variable(sentence: str, fact: str, words: int = 2) -> bool:
    """A lone lowercase letter (j, n, x) among the few words either side of the fact, not a unit after a number
    (5 m, 12 h, g/kg) nor part of an abbreviation (e.g.) or a list mark ((b)): a formula in words ("j runs from 1
    to n")."""
    at, end = sentence.index(fact), sentence.index(fact) + len(fact)
    before = list(re.finditer(r"\S*\w\S*", sentence[:at]))[-words:]  # words: an ellipsis or a lone comma is none
    after = list(re.finditer(r"\S*\w\S*", sentence[end:]))[:words]
    start, stop = before[0].start() if before else at, end + (after[-1].end() if after else 0)
    return any(start <= m.start() < at or end <= m.start() < stop
               for m in re.finditer(r"(?<![\w.'’(/-])(?<!\d )[b-z](?![\w'’)/-])(?!\.\w)", sentence))


def facts_worth_asking(sentence: str, title: str) -> list[str]:
    """The facts of a prose sentence (not a table row) that a reader would ask about, and that the title does not
    give away."""
    if "|" in sentence or "  " in sentence or not 40 <= len(sentence) <= 300:
        return []
    return [f for f in key_facts(sentence) if f not in title and sentence.count(f) == 1 and worth_asking(sentence, f)]


def fact_sentences(record: dict) -> list[tuple[str, list[str]]]:
    """(sentence, facts worth asking) of each fact-bearing prose sentence of a record's output."""
    sentences = _SENTENCE.split(record["output"].replace("\n", " "))
    return [(s, facts) for s in sentences if (facts := facts_worth_asking(s, record["title"]))]


def _question_sources(records: list[dict]):
    """The section records, one per chunk: the paper's own text."""
    seen = set()
    for record in records:
        if record.get("template") in ("section_summary", "title_abstract") and record["chunk_id"] not in seen:
            seen.add(record["chunk_id"])
            yield record


def _provenance(record: dict) -> dict:
    return {"source": record["source"], "page": record["page"], "section": record["section"]}


def questions_from_records(records: list[dict], per_chunk: int = 2) -> list[dict]:
    """Cloze questions from the outputs of section records (one list per source, deduplicated)."""
    questions = []
    for record in _question_sources(records):
        for sentence, facts in fact_sentences(record)[:per_chunk]:
            fact = facts[0]
            questions.append({"question": CLOZE.format(title=record["title"], sentence=sentence.replace(fact, "____", 1)),
                              "answer_start": sentence[:sentence.index(fact)].rstrip(), "answer": fact,
                              **_provenance(record)})
    return questions


def _wh_word(fact: str) -> str:
    """The question word that asks for `fact`."""
    number = NUMBER.fullmatch(fact)
    if _DATE.fullmatch(fact):
        return "what date"
    if not number:
        return "whom" if fact[0].isupper() else "what"
    unit = re.sub(r"^[\d,.]+\s?", "", fact)
    if not unit:
        return "what year" if re.fullmatch(r"1[5-9]\d\d|20\d\d", fact) else "what number"
    return "what percentage" if unit in ("%", "percent", "per cent") else f"how many {unit}"


def plain_questions_from_records(records: list[dict], sentences: slice = slice(0, 2)) -> list[dict]:
    """Plain questions made from the fact sentences (`sentences` of each chunk's), each asking for one fact by a
    wh-word in its place ("The station was founded in what year by ...?"): no training record is worded so."""
    questions = []
    for record in _question_sources(records):
        for sentence, facts in fact_sentences(record)[sentences]:
            fact = facts[-1]
            asked = sentence.replace(fact, _wh_word(fact), 1).rstrip(" .;:")
            questions.append({"question": f"In the paper \"{record['title']}\": {asked}?", "answer": fact,
                              "keywords": [fact], "sentence": sentence, **_provenance(record)})
    return questions


def validation_questions(train: list[dict], pdf_dir) -> list[dict]:
    """Questions that choose the epoch 02 keeps, apart from those it reports: per paper, plain questions made from
    its first two fact sentences of each chunk where questions are written for it, else from the next two (the first
    two are then the reported ones)."""
    questions = []
    for source in sorted({r["source"] for r in train}):
        written = questions_beside(pdf_dir, source).is_file()
        questions += plain_questions_from_records([r for r in train if r["source"] == source],
                                                  slice(0, 2) if written else slice(2, 4))
    return questions


def read_question_file(path) -> list[dict]:
    """Questions written for the papers: JSONL of {"question", "answer", "keywords": [facts an answer must hold]}."""
    from .errors import DatasetError
    path = Path(path)
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"Cannot read the test questions {path} ({type(error).__name__}): expected JSONL lines "
                           f"with \"question\", \"answer\" and \"keywords\" (a list of facts an answer must hold).")
    bad = [i for i, r in enumerate(rows, 1) if not (r.get("question") and r.get("keywords"))]
    if bad or not rows:
        raise DatasetError(f"{path}: lines {bad or 'none'} lack \"question\" or \"keywords\" (a list of facts).")
    return [{"question": r["question"], "answer": r.get("answer", ", ".join(r["keywords"])),
             "keywords": list(r["keywords"])} for r in rows]


def write_jsonl(path, rows: list[dict]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


QUESTIONS_BESIDE_PDF = ".questions.jsonl"  # `<pdf stem>.questions.jsonl` beside a PDF: questions written for it


def questions_beside(pdf_dir, source: str) -> Path:
    """The file of questions written for the PDF `source` (its path below pdf_dir), in the PDF's own folder."""
    return Path(pdf_dir) / Path(source).parent / (Path(source).stem + QUESTIONS_BESIDE_PDF)


def plain_questions(train: list[dict], pdf_dir) -> list[dict]:
    """Per paper, the questions written for it (`<stem>.questions.jsonl` beside its PDF), else questions made
    from its training sentences. `trained`: every fact the question asks is in a training record (a question
    about a test section's fact is reported apart: no tune can know it). `worded_as_trained`: a training record
    asks nearly the same words (the knowledge check reports recall without these too)."""
    questions = []
    for source in sorted({r["source"] for r in train}):
        own = [r for r in train if r["source"] == source]
        written = questions_beside(pdf_dir, source)
        made = read_question_file(written) if written.is_file() else plain_questions_from_records(own)
        asked = [_words(r["instruction"]) for r in own]
        questions += [{**q, "source": source, "worded_as_trained": worded_as(q["question"], asked)} for q in made]
    trained_text = " ".join(r["output"] for r in train)
    return [{**q, "trained": answered(trained_text, q)} for q in questions]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def worded_as(question: str, asked: list[set[str]], threshold: float = 0.8) -> bool:
    """A question whose words are (nearly) those of one of the `asked` instructions (Jaccard >= threshold)."""
    words = _words(question)
    return any(len(words & other) >= threshold * len(words | other) for other in asked)


def without_question_wordings(train: list[dict], questions: list[dict]) -> list[dict]:
    """The training records less those that ask (nearly) the words of a knowledge-check question: the check asks
    in words no training record uses, so a record that happens to word one alike would test its own wording."""
    asked = [_words(q["question"]) for q in questions]
    return [r for r in train if not worded_as(r["instruction"], asked)]


def write_plain_questions(dataset_dir, *, train: list[dict], pdf_dir) -> Path:
    """plain_questions.jsonl (reported by the knowledge check) and validation_questions.jsonl (chooses the epoch)."""
    write_jsonl(Path(dataset_dir) / VALIDATION_QUESTIONS_FILE, validation_questions(train, pdf_dir))
    return write_jsonl(Path(dataset_dir) / PLAIN_QUESTIONS_FILE, plain_questions(train, pdf_dir))


def write_questions(dataset_dir, questions: list[dict]) -> Path:
    return write_jsonl(Path(dataset_dir) / QUESTIONS_FILE, questions)


def read_questions(dataset_dir) -> list[dict]:
    return read_jsonl(Path(dataset_dir) / QUESTIONS_FILE)


def _normalise(text: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d)", "", re.sub(r"\s+", " ", text.lower())).strip()
    for pattern, unit in _UNIT_WORDS:
        text = re.sub(pattern, unit, text)
    return re.sub(r"(?<=\d) (?=%|°c)", "", text)


def fact_recalled(answer: str, fact: str) -> bool:
    """`fact` in `answer`: a number as a whole number (3.8 is not in 13.8) with its unit, a name by its words."""
    answer, fact = _normalise(answer), _normalise(fact)
    if re.search(r"\d", fact):
        return re.search(rf"(?<![\w.]){re.escape(fact)}(?![\w]|\.\d)", answer) is not None
    return all(re.search(rf"\b{re.escape(word)}\b", answer) for word in fact.split())


def answered(answer: str, question: dict) -> bool:
    """Every fact the question asks for (its keywords, else its answer) is in the answer."""
    return all(fact_recalled(answer, fact) for fact in question.get("keywords") or [question["answer"]])


def recall_score(answers: list[str], questions: list[dict]) -> float:
    """Share of questions whose facts are all present in the answers."""
    if not questions:
        return 0.0
    return sum(answered(a, q) for a, q in zip(answers, questions)) / len(questions)

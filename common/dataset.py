"""Chunks -> Alpaca records with provenance -> a train/test DatasetDict saved atomically (and pushed).

Every record's output is text of the paper itself. The split is by section, with a fixed seed, so no
chunk's text (overlaps included, which stay inside a section) is in both splits.
"""
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

from .chunking import chunk_markdown
from .config import redact
from .distributed import say
from .errors import DatasetError, ExportError, ModelError, SettingsError
from .augment import alias_questions, question_for_fact, restated_sentences, subject_candidates
from .knowledge import facts_worth_asking, key_facts
from .prompts import ENTITY_TEMPLATE, FACT_TEMPLATES, RECORD_TEMPLATES

COLUMNS = ["instruction", "input", "output", "source", "title", "section", "page", "chunk_id", "template"]
KINDS = {**RECORD_TEMPLATES, "fact": "one fact-bearing sentence, its subject named, asked for its facts the way "
                                     "people ask, then about its topic in other words "
                                     f"(e.g. {FACT_TEMPLATES[0]!r})",
         "entity": f"every training sentence that names one thing ({ENTITY_TEMPLATE!r})"}
_STOPWORDS = set("""a an the of in on at to for by with from and or as is are was were be been being that this these
those it its which who whom whose than then there their they them we our us he she his her into onto over under
between during after before about above below per each all any both more most other some such no nor not only own
same so too very can will just also may might must shall should would could has have had do does did across through
out up down off again once here when where why how what while within without upon among around""".split())
META_NAME = "pipeline.json"


def split_sentences(text):
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])", text) if s]


def _section_name(section):
    return section.split(" > ")[-1]


GENERIC_SECTIONS = {"abstract", "introduction", "background", "methods", "results", "discussion", "conclusion",
                    "conclusions", "summary"}


def topic_words(sentence: str, facts: list[str]) -> list[str]:
    """The sentence's content words, its facts left out: what a question about the fact would name."""
    for fact in facts:
        sentence = sentence.replace(fact, " ")
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z-]*[A-Za-z]", sentence) if w.lower() not in _STOPWORDS]
    return list(dict.fromkeys(words))


def fact_records(record: dict, variants: int, section: str, subjects: list[str] = ()) -> list[dict]:
    """`variants` records per fact-bearing sentence of a section record, each answered by the sentence with its
    subject named (augment.restated_sentences): first questions that ask for its facts the way people ask
    (augment.question_for_fact), then, where those are fewer, the sentence asked about its subject and topic in
    different words (FACT_TEMPLATES, each with other content words of the sentence)."""
    rows = []
    section = "the study" if section.lower() in GENERIC_SECTIONS else section
    sentences = split_sentences(record["output"].replace("\n", " "))
    restated_all = restated_sentences(sentences, list(subjects), heading=record["section"].split(" > ")[-1])
    for n, (sentence, restated) in enumerate(zip(sentences, restated_all)):
        facts = facts_worth_asking(restated, record["title"])
        if not facts:
            continue
        made = [question_for_fact(restated, fact) for fact in facts] + alias_questions(restated)
        asked = list(dict.fromkeys(q for q in made if q))
        words = topic_words(restated, facts)
        for k in range(len(asked), variants):
            chosen = words[k % 2::2][:4] if len(words) > 4 else words  # two halves of the words, in turn
            topic = " ".join(chosen) or section
            template = FACT_TEMPLATES[(n + k) % len(FACT_TEMPLATES)]
            asked.append(template.format(section=section, topic=topic, Topic=topic[:1].upper() + topic[1:]))
        rows += [{**record, "template": "fact", "instruction": question, "input": "", "output": restated}
                 for question in asked[:variants]]
    return rows


def entity_records(records: list[dict], min_sentences: int = 2, max_sentences: int = 8) -> list[dict]:
    """One record per named thing (a multi-word name) of each paper: every sentence of `records` that names it."""
    sentences = {}
    for record in records:
        if record["template"] not in ("section_summary", "title_abstract"):
            continue
        for sentence in split_sentences(record["output"].replace("\n", " ")):
            if not re.search(r"[.!?]$", sentence) or "|" in sentence:  # prose sentences, not front matter or tables
                continue
            for name in {f for f in key_facts(sentence) if not re.search(r"\d", f)}:
                found = sentences.setdefault((record["source"], name), {"record": record, "sentences": []})
                if sentence not in found["sentences"]:
                    found["sentences"].append(sentence)
    rows = []
    for (source, name), found in sorted(sentences.items()):
        if len(found["sentences"]) >= min_sentences:
            record = found["record"]
            rows.append({**record, "template": "entity", "input": "",
                         "instruction": ENTITY_TEMPLATE.format(title=record["title"], entity=name),
                         "output": " ".join(found["sentences"][:max_sentences])})
    return rows


def check_record_kinds(kinds: list[str]) -> None:
    """RECORD_KINDS names only kinds that 01 makes: a misspelt one would leave its records out without a word."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SettingsError(f"RECORD_KINDS: no record kind {', '.join(map(repr, unknown))}; the kinds are "
                            f"{', '.join(KINDS)} (on the command line: --record-kinds fact entity, or fact,entity).")


def check_train_records(train: list[dict], test: list[dict], kinds: list[str]) -> None:
    """Nothing is saved over an earlier dataset when no training record is left."""
    if not train:
        raise DatasetError(f"No training records are left ({len(test)} test records) with RECORD_KINDS {kinds}: "
                           f"add kinds (e.g. fact, section_summary) or more PDFs; nothing was saved.")


def keep_kinds(records: list[dict], kinds: list[str]) -> list[dict]:
    """The records of the kinds asked for (RECORD_KINDS); rows of other origins (your own, a teacher's) all stay."""
    return [r for r in records if r["template"] in kinds or r["template"] not in KINDS]


def excluded(section: str, excluded_sections: list[str]) -> bool:
    """A section left out of the records (references, acknowledgements...): its name, numbering aside, starts so."""
    name = re.sub(r"^[\dIVX]+(\.\d+)*\.?\s+", "", _section_name(section)).strip().lower()
    return any(name.startswith(e.lower()) for e in excluded_sections)


def shuffled_sentences(sentences: list[str], subjects: list[str], heading: str, *, seed: str) -> str:
    """The chunk's sentences in another order, each with its subject named so that it stands alone: the same facts
    in a second text, as Allen-Zhu & Li's permuted biographies (a fact seen in one fixed context is hard to ask for)."""
    restated = [" ".join(s.split()) for s in restated_sentences(sentences, list(subjects), heading=heading)]
    order = random.Random(seed).sample(range(len(restated)), len(restated))
    if order == sorted(order):  # never the paper's own order
        order = order[1:] + order[:1]
    return " ".join(restated[i] for i in order)


def records_from_chunk(chunk, source: str, *, fact_variants: int = 0, subjects: list[str] = ()) -> list[dict]:
    """Alpaca rows for one chunk, one per applicable template in RECORD_TEMPLATES, and its fact records."""
    base = {"source": source, "title": chunk.title, "section": chunk.section, "page": int(chunk.page),
            "chunk_id": chunk.chunk_id}
    name = re.sub(r"^\d+(\.\d+)*\.?\s+", "", _section_name(chunk.section))
    fields = {"title": chunk.title, "section": name}
    rows = []
    if _section_name(chunk.section).lower() == "abstract":
        rows.append({"template": "title_abstract", "instruction": RECORD_TEMPLATES["title_abstract"].format(**fields),
                     "input": "", "output": chunk.text})
    else:
        rows.append({"template": "section_summary", "input": "", "output": chunk.text,
                     "instruction": RECORD_TEMPLATES["section_summary"].format(**fields)})
    sentences = split_sentences(chunk.text)
    prose = "\n|" not in chunk.text and not chunk.text.startswith("|")
    facts = [s for s in sentences if key_facts(s)] if prose else []
    if 0 < len(facts) < len(sentences):
        rows.append({"template": "key_facts", "input": "", "output": " ".join(facts).strip(),
                     "instruction": RECORD_TEMPLATES["key_facts"].format(**fields)})
    if len(sentences) >= 2 and prose:
        half = len(sentences) // 2
        first, second = " ".join(sentences[:half]).strip(), " ".join(sentences[half:]).strip()
        rows.append({"template": "continuation", "input": first, "output": second,
                     "instruction": RECORD_TEMPLATES["continuation"].format(**fields)})
    if len(sentences) >= 3 and prose:
        rows.append({"template": "shuffled", "input": "", "output": shuffled_sentences(
                         sentences, subjects, _section_name(chunk.section), seed=chunk.chunk_id),
                     "instruction": RECORD_TEMPLATES["shuffled"].format(**fields)})
    rows = [{**base, **row} for row in rows]
    return rows + fact_records(rows[0], fact_variants, name, subjects) if fact_variants and prose else rows


def token_counter(tokenizer):
    """count_tokens(text) of a transformers tokenizer: its Rust backend directly where it has one (faster)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda text: len(backend.encode(text, add_special_tokens=False).ids)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def records_from_markdown(results, tokenizer, *, chunk_tokens: int, chunk_overlap: int, fact_variants: int = 0,
                          excluded_sections: list[str] = ()) -> list[dict]:
    """Records of every converted PDF, chunked with the training model's tokenizer; sections named in
    `excluded_sections` (references, acknowledgements...) stay in the markdown but give no records."""
    count_tokens = token_counter(tokenizer)
    records = []
    for result in results:
        if result.status not in ("converted", "cached"):  # failed, or a duplicate of a paper read already
            continue
        markdown = Path(result.markdown).read_text(encoding="utf-8")
        chunks = chunk_markdown(markdown, count_tokens, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap,
                                fallback_title=Path(result.pdf).stem)
        subjects = subject_candidates(title=chunks[0].title if chunks else "", text=markdown,
                                      headings=list(dict.fromkeys(_section_name(c.section) for c in chunks)))
        for i, chunk in enumerate(chunks):
            chunk.chunk_id = f"{Path(result.pdf).with_suffix('').as_posix()}-{i:04d}"  # its subfolders too: unique
            if not excluded(chunk.section, excluded_sections):
                records += records_from_chunk(chunk, result.pdf, fact_variants=fact_variants, subjects=subjects)
    return records


def _normalise(text):
    return re.sub(r"\W+", " ", text.lower()).strip()


def _shingles(text, n=5):
    words = _normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def deduplicate(records: list[dict], threshold: float = 0.9) -> list[dict]:
    """Drop exact duplicates (same instruction, input and output) and near-duplicate outputs.

    A record is dropped when the Jaccard similarity of its word 5-gram shingles (instruction and
    output) with a record kept before it is at least `threshold`: the result of comparing every pair,
    found without doing so. Shingles are hashed to 64-bit integers and sorted into one fixed order; two
    sets with Jaccard >= t share a shingle among the first |S| - ceil(t|S|) + 1 of each (prefix
    filtering), so only the kept records that share one of those, and have a compatible size, are
    compared. Linear in the number of records for text that is mostly distinct.
    """
    import math
    from array import array

    def prefix_length(size):  # size - ceil(t * size) + 1, rounded so as never to be too short
        return size - math.floor(threshold * size + 1e-9) + 1

    def near_duplicate(shingles):
        if threshold <= 0:
            return bool(kept_shingles)  # every pair is similar enough
        candidates = {i for token in shingles[:prefix_length(len(shingles))] for i in index.get(token, ())}
        mine, size = set(shingles), len(shingles)
        for i in candidates:
            other = kept_shingles[i]
            if len(other) < threshold * size * (1 - 1e-9) or size < threshold * len(other) * (1 - 1e-9):
                continue  # sizes too far apart to reach the threshold
            common = sum(1 for token in other if token in mine)
            if common / max(1, size + len(other) - common) >= threshold:
                return True
        return False

    kept, seen = [], set()
    kept_shingles, index = [], {}  # sorted shingle hashes of each kept record; prefix hash -> kept ids
    for record in records:
        key = hashlib.sha1(_normalise(record["instruction"] + "\x00" + record["input"] + "\x00" +
                                      record["output"]).encode()).hexdigest()
        if key in seen:
            continue
        shingles = sorted({hash(s) for s in _shingles(record["instruction"] + " " + record["output"])})
        if near_duplicate(shingles):
            continue
        seen.add(key)
        for token in shingles[:prefix_length(len(shingles))]:
            index.setdefault(token, []).append(len(kept_shingles))
        kept_shingles.append(array("q", shingles))
        kept.append(record)
    return kept


def split_by_section(records: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test): whole sections go to one side, chosen with a fixed seed."""
    groups = sorted({(r["source"], r["section"]) for r in records})
    rng = random.Random(seed)
    rng.shuffle(groups)
    n_test = round(len(groups) * test_fraction)
    if test_fraction > 0 and len(groups) >= 2:
        n_test = max(1, min(n_test, len(groups) - 1))
    test_groups = set(groups[:n_test])
    train = [r for r in records if (r["source"], r["section"]) not in test_groups]
    test = [r for r in records if (r["source"], r["section"]) in test_groups]
    return train, test


def build_dataset_dict(train: list[dict], test: list[dict]):
    from datasets import Dataset, DatasetDict
    def as_dataset(rows):
        return Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS})
    return DatasetDict({"train": as_dataset(train), "test": as_dataset(test)})


def kind_description(template: str) -> str:
    if template.startswith("qa:"):
        return "a question and answer written by a teacher LLM from one chunk, checked against it (QA_TEACHER)"
    return KINDS.get(template, "rows of your own file, as given")


def dataset_card(dataset_dict, meta: dict) -> str:
    counts = {split: len(ds) for split, ds in dataset_dict.items()}
    sources = sorted(set(dataset_dict["train"]["source"]) | set(dataset_dict["test"]["source"]))
    templates = sorted(set(dataset_dict["train"]["template"]) | set(dataset_dict["test"]["template"]))
    lines = ["---", "license: other  # TODO: set the licence of your papers' text", "task_categories:",
             "- text-generation", "language:", "- en", "---", "",
             "# Dataset built from PDF papers", "",
             "Alpaca-style records (`instruction`, `input`, `output`) made from the papers below by "
             "`01_create_dataset.py`. Every output is text of a paper; each record names its `source` PDF, "
             "`title`, `section`, first `page`, `chunk_id` and `template`.", "",
             "## Counts", "", "| split | records |", "|---|---|"]
    lines += [f"| {split} | {n} |" for split, n in counts.items()]
    lines += ["", "## Records by kind", "", "| kind | train | test |", "|---|---|---|"]
    lines += [f"| `{t}` | {dataset_dict['train']['template'].count(t)} | {dataset_dict['test']['template'].count(t)} |"
              for t in templates]
    lines += ["", "## Sources", ""] + [f"- {s}" for s in sources]
    lines += ["", "## Kinds", ""] + [f"- `{t}`: {kind_description(t)}" for t in templates]
    lines += ["", "## Settings", "", "```json", json.dumps(meta, indent=2), "```",
              "", "## Licence", "", "Placeholder: state the licence under which the papers' text may be shared."]
    return "\n".join(lines) + "\n"


def save_dataset(dataset_dict, dataset_dir, meta: dict) -> Path:
    """save_to_disk + JSONL per split + card + meta into a temporary folder, then swap it in whole."""
    dataset_dir = Path(dataset_dir)
    tmp = dataset_dir.with_name(dataset_dir.name + ".tmp")
    old = dataset_dir.with_name(dataset_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset_dict.save_to_disk(str(tmp))
    for split, ds in dataset_dict.items():
        ds.to_json(str(tmp / f"{split}.jsonl"), lines=True, force_ascii=False)
    (tmp / "README.md").write_text(dataset_card(dataset_dict, meta), encoding="utf-8")
    (tmp / META_NAME).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if dataset_dir.exists():
        os.replace(dataset_dir, old)
    os.replace(tmp, dataset_dir)
    shutil.rmtree(old, ignore_errors=True)
    return dataset_dir


def load_dataset_dir(dataset_dir):
    """The DatasetDict saved by 01, with a clear error where there is none."""
    from datasets import load_from_disk
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "dataset_dict.json").exists():
        raise DatasetError(f"No dataset in {dataset_dir}: run 01_create_dataset.py first "
                                f"(or pass --dataset-dir).")
    dataset = load_from_disk(str(dataset_dir))
    missing = [c for c in ("instruction", "input", "output") if c not in dataset["train"].column_names]
    if missing:
        raise DatasetError(f"The dataset in {dataset_dir} lacks the columns {missing}: rebuild it with 01.")
    if len(dataset["train"]) == 0:
        raise DatasetError(f"The train split in {dataset_dir} is empty: add PDFs and rebuild it with 01.")
    return dataset


def check_dataset_push(repo_id: str, token: str | None) -> None:
    """Before any long work: a push needs a repo id and a token."""
    if not repo_id:
        raise ExportError("HUB_DATASET_ID is empty: set it (e.g. --hub-dataset-id you/my-papers) to push.")
    if not token:
        raise ExportError("HF_TOKEN is not set: put HF_TOKEN=... in .env (see .env.example) to push.")


def push_dataset(dataset_dir, repo_id: str, token: str | None, *, private: bool = True) -> None:
    """Push the saved DatasetDict and its card; on any failure an ExportError, and the local copy stays."""
    check_dataset_push(repo_id, token)
    try:
        from huggingface_hub import HfApi
        dataset = load_dataset_dir(dataset_dir)
        dataset.push_to_hub(repo_id, private=private, token=token)
        HfApi(token=token).upload_file(path_or_fileobj=str(Path(dataset_dir) / "README.md"),
                                       path_in_repo="README.md", repo_id=repo_id, repo_type="dataset")
    except Exception as error:  # network, auth, permissions, quota: all end the same way for the user
        first_line = (str(error).splitlines() or [""])[0][:300]
        why = f"{type(error).__name__}: {first_line}"
        raise ExportError(redact(f"Push to the Hub failed ({why}). "
                                 f"The local dataset in {dataset_dir} is intact; check your network and HF_TOKEN, "
                                 f"then rerun with --push-to-hub.", token)) from None


def check_dataset_tokenizer(dataset_dir, tokenizer) -> None:
    """Stop when step 01 measured the chunks with another tokenizer than the model's (same vocab is fine)."""
    meta_path = Path(dataset_dir) / META_NAME
    built_for = json.loads(meta_path.read_text()).get("tokenizer") if meta_path.exists() else None
    if not built_for:
        return
    from .models import load_tokenizer, resolve_model_path
    try:
        other = load_tokenizer(resolve_model_path(built_for))
    except (ModelError, OSError):
        say(f"Warning: cannot check the tokenizer '{built_for}' that the dataset was built with.")
        return
    if other.get_vocab() != tokenizer.get_vocab():
        raise DatasetError(f"The dataset in {dataset_dir} was built with the tokenizer of '{built_for}', which is "
                           f"not this model's: its chunk sizes are wrong for it. Rebuild it with "
                           f"`01_create_dataset.py --model-name <this model>`, or train '{built_for}'.")

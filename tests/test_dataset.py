import pytest
from datasets import DatasetDict, load_from_disk

from common.dataset import (COLUMNS, build_dataset_dict, deduplicate, push_dataset, save_dataset,
                            split_by_section)
from common.errors import ExportError


def test_dataset_opens_with_datasets_and_has_provenance(sample_dataset_dir):
    dataset = load_from_disk(str(sample_dataset_dir))
    assert isinstance(dataset, DatasetDict) and set(dataset) == {"train", "test"}
    assert set(COLUMNS) <= set(dataset["train"].column_names)
    assert len(dataset["train"]) >= 20 and len(dataset["test"]) >= 1
    row = dataset["train"][0]
    assert row["source"] == "sample_paper.pdf" and row["page"] >= 1 and row["chunk_id"].startswith("sample_paper-")
    assert (sample_dataset_dir / "train.jsonl").exists() and (sample_dataset_dir / "README.md").exists()


def test_outputs_come_from_the_paper(sample_dataset_dir, sample_markdown):
    """The paper's text as it stands; a fact record's sentence with its subject named from the paper, citations out."""
    import re
    flat = " ".join(sample_markdown.split())
    paper_words = set(re.findall(r"\w+", flat.lower()))
    for row in load_from_disk(str(sample_dataset_dir))["train"]:
        first_sentence = row["output"].split(". ")[0][:60]
        if row["template"] in ("fact", "shuffled"):
            assert set(re.findall(r"\w+", row["output"].lower())) <= paper_words
        elif "|" not in first_sentence:
            assert " ".join(first_sentence.split()) in flat


def test_split_by_section_never_leaks(sample_dataset_dir):
    dataset = load_from_disk(str(sample_dataset_dir))
    train_sections = {(r["source"], r["section"]) for r in dataset["train"]}
    test_sections = {(r["source"], r["section"]) for r in dataset["test"]}
    assert not train_sections & test_sections
    train_text = " ".join(list(dataset["train"]["output"]) + list(dataset["train"]["input"]))
    for out in dataset["test"]["output"]:
        assert out[:80] not in train_text


def test_fact_records_answer_with_a_sentence_of_their_own_section(sample_dataset_dir):
    """Each answer is a sentence of the record's own chunk (its subject perhaps named, its citations dropped), and
    each question leaves out at least one of the sentence's facts: the one it asks for."""
    import re
    from common.augment import strip_citations
    from common.knowledge import key_facts
    dataset = load_from_disk(str(sample_dataset_dir))
    for split in ("train", "test"):
        rows = list(dataset[split])
        text = {r["chunk_id"]: strip_citations(" ".join(r["output"].split())) for r in rows
                if r["template"] in ("section_summary", "title_abstract")}
        facts = [r for r in rows if r["template"] == "fact"]
        assert len(facts) >= (100 if split == "train" else 1)
        for r in facts:
            said = set(re.findall(r"\w+", r["output"].lower()))  # most words from its own chunk, all numbers
            assert len(said & set(re.findall(r"\w+", text[r["chunk_id"]].lower()))) >= 0.7 * len(said)
            assert all(f in text[r["chunk_id"]] for f in key_facts(r["output"]) if re.search(r"\d", f))
            assert any(f not in r["instruction"] for f in key_facts(r["output"]))
    questions = [r["instruction"] for r in dataset["train"] if r["template"] == "fact"]
    assert "In what year was Kesterhaven Intertidal Station founded?" in questions  # its subject named
    assert sum(bool(re.match(r"(What|Which|Who|When|How|In|By|At|On|To|From|Of|For|Since)\b", q))
               for q in questions) >= 0.5 * len(questions)  # most ask with the question word first
    card = (sample_dataset_dir / "README.md").read_text()
    assert "## Records by kind" in card and "| `fact` |" in card


def test_shuffled_records_hold_their_chunks_sentences_in_another_order(sample_dataset_dir):
    """A chunk's sentences, each with its subject named as in its fact records, none left out, none added, and never
    in the paper's order."""
    import re
    from common.augment import strip_citations
    from common.dataset import split_sentences
    dataset = load_from_disk(str(sample_dataset_dir))
    for split in ("train", "test"):
        rows = list(dataset[split])
        text = {r["chunk_id"]: strip_citations(" ".join(r["output"].split())) for r in rows
                if r["template"] in ("section_summary", "title_abstract")}
        shuffled = {r["chunk_id"]: r for r in rows if r["template"] == "shuffled"}
        assert len(shuffled) >= (10 if split == "train" else 1)
        for chunk_id, r in shuffled.items():
            ends = [len(re.findall(r"[.!?](?:\s|$)", t)) for t in (r["output"], text[chunk_id])]
            assert ends[0] == ends[1] and len(split_sentences(text[chunk_id])) >= 3
            assert sorted(re.findall(r"\d+", r["output"])) == sorted(re.findall(r"\d+", text[chunk_id]))
            assert r["section"] in r["instruction"] or r["section"].split(" > ")[-1].split(" ", 1)[-1] in r["instruction"]
        for r in rows:  # the restated sentence of each fact record of the chunk is one of its sentences
            if r["template"] == "fact" and r["chunk_id"] in shuffled:
                assert r["output"] in shuffled[r["chunk_id"]]["output"]


def test_shuffled_sentences_are_a_fixed_permutation_never_the_papers_order():
    from common.dataset import shuffled_sentences
    sentences = ["Ilse Marrow founded the station in 1987.", "It lies 14 km north of Velm.", "Storms hit it in 2016."]
    seen = set()
    for seed in (f"paper-{i:04d}" for i in range(30)):
        out = shuffled_sentences(sentences, ["Kesterhaven Intertidal Station"], "History", seed=seed)
        assert out == shuffled_sentences(sentences, ["Kesterhaven Intertidal Station"], "History", seed=seed)
        parts = [next(i for i, key in enumerate(("1987", "14 km", "2016")) if key in p) for p in out.split(". ")]
        assert sorted(parts) == [0, 1, 2] and parts != [0, 1, 2]
        seen.add(tuple(parts))
    assert len(seen) >= 3


def test_only_the_record_kinds_asked_for_are_kept():
    from common.dataset import keep_kinds
    rows = [{"template": t} for t in ("section_summary", "continuation", "fact", "qa:teacher:v1", "byod")]
    assert [r["template"] for r in keep_kinds(rows, ["section_summary", "fact"])] == \
        ["section_summary", "fact", "qa:teacher:v1", "byod"]


def test_record_kinds_are_checked_by_name_and_an_empty_train_split_is_refused():
    from common.dataset import KINDS, check_record_kinds, check_train_records
    from common.errors import DatasetError, SettingsError
    check_record_kinds(list(KINDS))
    with pytest.raises(SettingsError, match="no record kind 'facts'; the kinds are section_summary"):
        check_record_kinds(["facts", "entity"])
    check_train_records([{"template": "fact"}], [], ["fact"])
    with pytest.raises(DatasetError, match=r"No training records are left \(3 test records\) .*nothing was saved"):
        check_train_records([], [{}] * 3, ["continuation"])


def test_entity_records_gather_training_sentences_only(sample_dataset_dir):
    from common.dataset import split_sentences
    dataset = load_from_disk(str(sample_dataset_dir))
    train_sentences = {s for r in dataset["train"] if r["template"] != "entity"
                       for s in split_sentences(r["output"].replace("\n", " "))}
    entities = [r for r in dataset["train"] if r["template"] == "entity"]
    assert entities and not [r for r in dataset["test"] if r["template"] == "entity"]
    for r in entities:
        for sentence in split_sentences(r["output"]):
            assert sentence in train_sentences


def test_references_and_acknowledgements_give_no_records(sample_dataset_dir, sample_markdown):
    assert "## Acknowledgements" in sample_markdown and "## References" in sample_markdown
    dataset = load_from_disk(str(sample_dataset_dir))
    sections = {r["section"].split(" > ")[-1] for split in ("train", "test") for r in dataset[split]}
    assert "Acknowledgements" not in sections and "References" not in sections
    assert "Abstract" in sections


def test_split_is_reproducible():
    rows = [{"source": "a.pdf", "section": f"s{i}", "x": i} for i in range(20)]
    assert split_by_section(rows, 0.2, 7) == split_by_section(rows, 0.2, 7)


def test_exact_and_near_duplicates_are_removed():
    base = {"instruction": "What?", "input": "", "output": "The quick brown fox jumps over the lazy dog " * 5}
    near = {**base, "output": base["output"] + "today"}
    other = {**base, "output": "Something else entirely, with many different words in it."}
    assert deduplicate([base, dict(base), near, other]) == [base, other]


def _tiny(n):
    rows = [{c: "" for c in COLUMNS} | {"page": 1, "section": f"s{i}", "output": f"text {i}"} for i in range(n)]
    return build_dataset_dict(rows[:-1], rows[-1:])


def test_save_is_atomic_a_crash_keeps_the_old_dataset(tmp_path, monkeypatch):
    target = tmp_path / "ds"
    save_dataset(_tiny(3), target, {})
    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(DatasetDict, "save_to_disk", crash)
    with pytest.raises(OSError):
        save_dataset(_tiny(5), target, {})
    assert len(load_from_disk(str(target))["train"]) == 2  # the old, whole dataset


def test_push_to_unreachable_hub_fails_clearly_and_keeps_the_local_copy(tmp_path):
    # no hub is reachable from this machine or CI: the push fails like it does for a user offline
    target = save_dataset(_tiny(3), tmp_path / "ds", {})
    with pytest.raises(ExportError) as error:
        push_dataset(target, "someone/papers", token="hf_supersecret")
    assert "local dataset" in str(error.value) and "hf_supersecret" not in str(error.value)
    assert len(load_from_disk(str(target))["train"]) == 2


def test_push_without_token_says_what_to_do(tmp_path):
    target = save_dataset(_tiny(3), tmp_path / "ds", {})
    with pytest.raises(ExportError, match="HF_TOKEN"):
        push_dataset(target, "someone/papers", token=None)


def deduplicate_pairwise(records, threshold=0.9):
    """The former deduplicate(): every record against every kept one."""
    import hashlib
    from common.dataset import _normalise, _shingles
    kept, seen, kept_shingles = [], set(), []
    for record in records:
        key = hashlib.sha1(_normalise(record["instruction"] + "\x00" + record["input"] + "\x00" +
                                      record["output"]).encode()).hexdigest()
        if key in seen:
            continue
        shingles = _shingles(record["instruction"] + " " + record["output"])
        if any(len(shingles & other) / max(1, len(shingles | other)) >= threshold for other in kept_shingles):
            continue
        seen.add(key)
        kept_shingles.append(shingles)
        kept.append(record)
    return kept


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8, 0.9, 1.0])
def test_indexed_deduplicate_keeps_what_comparing_every_pair_keeps(threshold):
    import random
    rng = random.Random(threshold)
    words = [f"w{i}" for i in range(30)]
    records = []
    for i in range(400):  # short texts of few distinct words: many pairs near every threshold
        if records and rng.random() < 0.4:
            base = rng.choice(records)["output"].split()
            for _ in range(rng.randint(0, 3)):
                base[rng.randrange(len(base))] = rng.choice(words)
            output = " ".join(base[:rng.randint(max(1, len(base) - 3), len(base))])
        else:
            output = " ".join(rng.choices(words, k=rng.randint(1, 25)))
        records.append({"instruction": rng.choice(["Q?", "Summarise."]), "input": "", "output": output})
    assert deduplicate(records, threshold) == deduplicate_pairwise(records, threshold)

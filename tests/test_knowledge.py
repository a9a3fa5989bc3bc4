import json

from common.knowledge import (answered, fact_recalled, key_facts, plain_questions, plain_questions_from_records,
                              questions_from_records, read_question_file, recall_score, worth_asking)


def test_key_facts_are_numbers_with_units_and_names():
    facts = key_facts("The station was founded in 1987 by the marine ecologist Ilse Marrow, 14 km north.")
    assert "Ilse Marrow" in facts and "1987" in facts and "14 km" in facts
    # no trailing punctuation, nothing out of a model name such as SL-7, thousands kept together
    assert key_facts("It ran to October 2021, with SL-7 loggers, and 1,264 thalli.") == ["2021", "1,264"]


def test_pointers_into_the_paper_are_not_facts_worth_asking():
    assert not worth_asking("Section 3 presents a simple growth model.", "3")
    assert not worth_asking("As Table 2 shows, growth was fastest mid-shore.", "2")
    assert not worth_asking("The rate follows from Eq. 4 directly.", "4")
    assert worth_asking("Growth was fastest in the mid intertidal zone, at 4.9 mm per year.", "4.9 mm")


def _made_from_the_sample(sample_dataset_dir, make):
    """(training records, the questions `make` makes of them, the training instructions)."""
    from datasets import load_from_disk
    train = list(load_from_disk(str(sample_dataset_dir))["train"])
    questions = make(train)
    assert len(questions) >= 15
    return train, questions, {r["instruction"] for r in train}


def test_questions_are_clozes_of_the_papers_sentences(sample_dataset_dir):
    train, questions, instructions = _made_from_the_sample(sample_dataset_dir, questions_from_records)
    for q in questions:
        assert "____" in q["question"] and q["question"] not in instructions
        assert q["answer"] not in q["question"].split("\n")[-1]  # the fact is blanked out
        sentence = q["question"].split("\n")[-1].replace("____", q["answer"], 1)
        assert any(sentence in r["output"].replace("\n", " ") for r in train)
        assert sentence.startswith(q["answer_start"]) and q["answer"] not in q["answer_start"]
        assert q["source"] == "sample_paper.pdf" and q["page"] >= 1


def test_plain_questions_ask_for_the_fact_with_a_question_word(sample_dataset_dir):
    _, questions, instructions = _made_from_the_sample(sample_dataset_dir, plain_questions_from_records)
    for q in questions:
        assert q["question"].endswith("?") and q["question"] not in instructions
        assert not fact_recalled(q["question"], q["answer"])  # the question does not hold its answer
        assert any(w in q["question"] for w in ("what", "whom", "how many"))
    founded = [q for q in questions if q["answer"] == "1987"]
    assert founded and "founded in what year" in founded[0]["question"]


def test_questions_written_for_a_paper_are_used_and_checked_against_training(tmp_path):
    train = [{"source": "paper.pdf", "title": "T", "section": "2 Site", "page": 1, "chunk_id": "paper-0000",
              "template": "section_summary", "output": "The station was founded in 1987 by Ilse Marrow."}]
    (tmp_path / "paper.questions.jsonl").write_text(
        json.dumps({"question": "When was it founded?", "answer": "1987", "keywords": ["1987"]}) + "\n" +
        json.dumps({"question": "How deep is the bay?", "answer": "40 m", "keywords": ["40 m"]}) + "\n")
    questions = plain_questions(train, tmp_path)
    assert [(q["question"], q["trained"]) for q in questions] == [("When was it founded?", True),
                                                                   ("How deep is the bay?", False)]
    assert read_question_file(tmp_path / "paper.questions.jsonl")[1]["keywords"] == ["40 m"]


def test_facts_are_matched_whole_with_their_units():
    assert fact_recalled("about 1264 thalli", "1,264")
    assert fact_recalled("It grew 3.8 millimetres a year.", "3.8 mm")
    assert not fact_recalled("It grew 13.8 mm a year.", "3.8 mm") and not fact_recalled("3.85 mm", "3.8 mm")
    assert fact_recalled("38 per cent of the cover", "38 percent") and fact_recalled("38% of it", "38 percent")
    assert fact_recalled("it was ilse marrow", "Ilse Marrow") and not fact_recalled("Ilse Vansk", "Ilse Marrow")
    assert answered("Edvard Quillon described it in 1962.", {"answer": "", "keywords": ["Quillon", "1962"]})
    assert not answered("Edvard Quillon described it.", {"answer": "", "keywords": ["Quillon", "1962"]})


def test_recall_score_counts_facts_present():
    questions = [{"answer": "1,264"}, {"answer": "Ilse Marrow"}]
    assert fact_recalled("about 1264 thalli", "1,264")
    assert recall_score(["1264 of them", "nobody knows"], questions) == 0.5

import json

from common.knowledge import (answered, fact_recalled, key_facts, plain_questions, plain_questions_from_records,
                              questions_from_records, read_question_file, recall_score, worth_asking)
from tests.conftest import SAMPLE_PDF


def test_key_facts_are_numbers_with_units_and_names():
    facts = key_facts("The station was founded in 1987 by the marine ecologist Ilse Marrow, 14 km north.")
    assert "Ilse Marrow" in facts and "1987" in facts and "14 km" in facts
    # no trailing punctuation, nothing out of a model name such as SL-7, thousands kept together, a date whole
    assert key_facts("It ran to October 2021, with SL-7 loggers, and 1,264 thalli.") == ["October 2021", "1,264"]
    assert key_facts("It struck the Isle of Oradune on 17 November 2016.") == ["Isle of Oradune", "17 November 2016"]
    assert key_facts("The colour comes from a pigment called velmorin.") == ["velmorin"]


def test_pointers_into_the_paper_are_not_facts_worth_asking():
    assert not worth_asking("Section 3 presents a simple growth model.", "3")
    assert not worth_asking("As Table 2 shows, growth was fastest mid-shore.", "2")
    assert not worth_asking("The rate follows from Eq. 4 directly.", "4")
    assert worth_asking("Growth was fastest in the mid intertidal zone, at 4.9 mm per year.", "4.9 mm")
    assert not worth_asking("The estimates are asymptotically normal (White 2000).", "2000")  # a cited work's year
    assert not worth_asking("Smoothed weights use C = 4 by default here.", "4")  # a number in a formula
    assert worth_asking("The station was founded in 1987 by Ilse Marrow.", "1987")
    # seen in a real paper (lme4's JSS article): the later numbers of a list of pointers, and a formula in words
    assert not worth_asking("Tables 3 and 4 summarize the matrices that determine the structure.", "4")
    assert not worth_asking("See Sections 2, 3 and 5 for the details of the fit.", "5")
    assert not worth_asking("These rows correspond to the jth sample, and thus j runs from 1, . . . , n.", "1")
    assert not worth_asking("For each k from 1 to 10 we fit the model again.", "1")
    # ... while units, abbreviations, list marks and a formula further off leave a fact alone
    assert worth_asking("Plots were between 2 and 5 m apart on the lower shore.", "2")
    assert worth_asking("Survival fell to 87 percent at 20 g/kg, 73 percent at 45 g/kg and 37 percent at 50 g/kg.",
                        "37 percent")
    assert worth_asking("The trials ran for 12 h at 30 degrees in (b) and (c), e.g. 5 sites.", "12 h")
    assert worth_asking("The largest growth rate is therefore a * E_c / e, which equals 4.86 mm per year.", "4.86 mm")


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
              "template": "section_summary", "instruction": "What does the paper \"T\" say about Site?",
              "output": "The station was founded in 1987 by Ilse Marrow."}]
    (tmp_path / "paper.questions.jsonl").write_text(
        json.dumps({"question": "When was it founded?", "answer": "1987", "keywords": ["1987"]}) + "\n" +
        json.dumps({"question": "How deep is the bay?", "answer": "40 m", "keywords": ["40 m"]}) + "\n")
    train.append({**train[0], "template": "fact", "instruction": "How deep is the bay?"})
    questions = plain_questions(train, tmp_path)
    assert [(q["question"], q["trained"]) for q in questions] == [("When was it founded?", True),
                                                                   ("How deep is the bay?", False)]
    assert [q["worded_as_trained"] for q in questions] == [False, True]  # a training record asks the second
    assert read_question_file(tmp_path / "paper.questions.jsonl")[1]["keywords"] == ["40 m"]


def test_questions_are_read_beside_a_pdf_in_a_subfolder(tmp_path):
    (tmp_path / "topic").mkdir()
    (tmp_path / "topic" / "paper.questions.jsonl").write_text(
        json.dumps({"question": "When was it founded?", "answer": "1987", "keywords": ["1987"]}) + "\n")
    train = [{"source": "topic/paper.pdf", "title": "T", "section": "2 Site", "page": 1, "chunk_id": "topic/paper-0000",
              "template": "section_summary", "instruction": "What does the paper \"T\" say about Site?",
              "output": "The station was founded in 1987 by Ilse Marrow."}]
    assert [q["question"] for q in plain_questions(train, tmp_path)] == ["When was it founded?"]


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


def test_validation_questions_are_apart_from_the_reported_ones(sample_dataset_dir, tmp_path):
    """They choose the epoch 02 keeps: never the questions the check reports."""
    from datasets import load_from_disk
    from common.knowledge import validation_questions
    train = list(load_from_disk(str(sample_dataset_dir))["train"])
    made, written = validation_questions(train, tmp_path), plain_questions(train, tmp_path)  # no written questions
    assert len(made) >= 5 and len(written) >= 10
    assert not {q["sentence"] for q in made} & {q["sentence"] for q in written}
    assert all(any(q["sentence"] in r["output"].replace("\n", " ") for r in train) for q in made)
    with_file = validation_questions(train, SAMPLE_PDF.parent)  # the sample's own questions are the reported ones
    reported = {q["question"] for q in plain_questions(train, SAMPLE_PDF.parent)}
    assert with_file and reported.isdisjoint(q["question"] for q in with_file)


def test_a_question_worded_like_a_training_instruction_is_flagged():
    from common.knowledge import worded_as
    asked = [set("in what year was kesterhaven intertidal station founded".split())]
    assert worded_as("In what year was Kesterhaven Intertidal Station founded?", asked)
    assert not worded_as("When did Ilse Marrow found the station at Kesterhaven?", asked)


def test_no_training_record_asks_a_check_question_in_its_words(sample_dataset_dir):
    """The sample's own questions are a fixed test, never trained on: 01 drops the records that word one alike."""
    from datasets import load_from_disk
    from common.knowledge import without_question_wordings
    train = list(load_from_disk(str(sample_dataset_dir))["train"])
    questions = plain_questions(train, SAMPLE_PDF.parent)
    assert any(q["worded_as_trained"] for q in questions)  # seen: 3 of 24 before the records are dropped
    kept = without_question_wordings(train, questions)
    assert 0 < len(train) - len(kept) < 0.1 * len(train)
    assert not any(q["worded_as_trained"] for q in plain_questions(kept, SAMPLE_PDF.parent))
    assert all(q["trained"] for q in plain_questions(kept, SAMPLE_PDF.parent))  # their facts still trained

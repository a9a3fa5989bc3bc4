from common.knowledge import fact_recalled, key_facts, questions_from_records, recall_score


def test_key_facts_are_numbers_with_units_and_names():
    facts = key_facts("The station was founded in 1987 by the marine ecologist Ilse Marrow, 14 km north.")
    assert "Ilse Marrow" in facts and "1987" in facts and "14 km" in facts
    # no trailing punctuation, nothing out of a model name such as SL-7, thousands kept together
    assert key_facts("It ran to October 2021, with SL-7 loggers, and 1,264 thalli.") == ["2021", "1,264"]


def test_questions_are_clozes_of_the_papers_sentences(sample_dataset_dir):
    from datasets import load_from_disk
    train = list(load_from_disk(str(sample_dataset_dir))["train"])
    questions = questions_from_records(train)
    assert len(questions) >= 15
    instructions = {r["instruction"] for r in train}
    for q in questions:
        assert "____" in q["question"] and q["question"] not in instructions
        assert q["answer"] not in q["question"].split("\n")[-1]  # the fact is blanked out
        sentence = q["question"].split("\n")[-1].replace("____", q["answer"], 1)
        assert any(sentence in r["output"].replace("\n", " ") for r in train)
        assert sentence.startswith(q["answer_start"]) and q["answer"] not in q["answer_start"]
        assert q["source"] == "sample_paper.pdf" and q["page"] >= 1


def test_recall_score_counts_facts_present():
    questions = [{"answer": "1,264"}, {"answer": "Ilse Marrow"}]
    assert fact_recalled("about 1264 thalli", "1,264")
    assert recall_score(["1264 of them", "nobody knows"], questions) == 0.5

"""Sentences restated with their subject named, and questions asking for their facts, on the paper's own words."""
import re

from common.augment import (alias_questions, question_for_fact, restated_sentences, strip_citations,
                            subject_candidates)

TITLE = "Growth of the Velmora Tidal-Lichen (Halocladia velmorensis) at Kesterhaven Intertidal Station"
TEXT = """# Growth of the Velmora Tidal-Lichen (Halocladia velmorensis) at Kesterhaven Intertidal Station

## 2.1 Kesterhaven Intertidal Station

The Velmora tidal-lichen, Halocladia velmorensis, grows on basalt. Kesterhaven Intertidal Station stands on the
Isle of Oradune. The station was founded in 1987 by the marine ecologist Ilse Marrow [2].
"""


def test_candidates_are_the_papers_names_in_its_own_spelling():
    found = subject_candidates(title=TITLE, headings=["2.1 Kesterhaven Intertidal Station", "Growth by Zone"],
                               text=TEXT)
    assert "the Velmora tidal-lichen" in found and "Kesterhaven Intertidal Station" in found
    assert "Velmora Tidal-Lichen" not in found  # the title's casing, not the text's
    assert "Growth by Zone" not in found  # a heading the text never writes


def test_a_description_or_pronoun_is_replaced_by_the_name_it_stands_for():
    candidates = ["the Velmora tidal-lichen", "Kesterhaven Intertidal Station", "Ilse Marrow"]
    originals = ["The station was founded in 1987 by the marine ecologist Ilse Marrow [2].",
                 "The Velmora tidal-lichen, Halocladia velmorensis, is one of the few lichens.",
                 "It was first described in 1962 by the botanist Edvard Quillon [1].",
                 "The photosynthetic partner of the lichen is the green alga Pellicora marina.",
                 "Growth was fastest in the mid intertidal zone."]
    restated = restated_sentences(originals, candidates, heading="2.1 Kesterhaven Intertidal Station")
    assert restated[0] == "Kesterhaven Intertidal Station was founded in 1987 by the marine ecologist Ilse Marrow."
    assert restated_sentences(originals[:1], candidates)[0].startswith("The station")  # no station in view: kept
    assert restated[2] == "The Velmora tidal-lichen was first described in 1962 by the botanist Edvard Quillon."
    assert "partner of the Velmora tidal-lichen is" in restated[3]
    assert restated[4] == originals[4]  # nothing to name: unchanged
    names = set(re.findall(r"\w+", " ".join(candidates).lower()))
    for original, after in zip(originals, restated):  # nothing but the sentence's own words and the paper's names
        assert set(re.findall(r"\w+", after.lower())) <= set(re.findall(r"\w+", original.lower())) | names


def test_citations_are_dropped():
    assert strip_citations("It was described in 1962 [1, 4]. Then [12] again.") == \
        "It was described in 1962. Then again."


def test_questions_put_the_question_word_first():
    sentence = "Kesterhaven Intertidal Station was founded in 1987 by the marine ecologist Ilse Marrow."
    assert question_for_fact(sentence, "1987") == "In what year was Kesterhaven Intertidal Station founded?"
    assert question_for_fact(sentence, "Ilse Marrow") == \
        "By which marine ecologist was Kesterhaven Intertidal Station founded in 1987?"
    assert question_for_fact("Storm Aldith struck the Isle of Oradune on 17 November 2016.", "17 November 2016") == \
        "When did Storm Aldith strike the Isle of Oradune?"
    assert question_for_fact("The mean radial growth rate across all thalli was 3.8 mm per year.", "3.8 mm") == \
        "What was the mean radial growth rate across all thalli?"
    assert question_for_fact("A total of 1,264 thalli were measured in 48 permanent quadrats.", "1,264") == \
        "How many thalli were measured in 48 permanent quadrats?"
    assert question_for_fact("The lichen has an optimum salinity of 34 g/kg.", "34 g/kg") == \
        "What is the optimum salinity of the lichen?"
    assert question_for_fact("The colour comes from a pigment called velmorin.", "velmorin") == \
        "What is the pigment called?"
    assert question_for_fact("In the April 2017 campaign, lichen cover had fallen by 38 percent.", "38 percent") == \
        "By how much had Lichen cover fallen?"


def test_a_question_never_holds_its_own_answer_and_odd_shapes_give_none():
    sentences = ["We report thirteen years of growth measurements made at Kesterhaven between April 2009 and 2021.",
                 "Storm Aldith, which struck the island on 17 November 2016, removed 38 percent of the cover.",
                 "Section 2 describes the site."]
    for sentence in sentences:
        for fact in ("April 2009", "2021", "17 November 2016", "38 percent", "2"):
            question = question_for_fact(sentence, fact)
            assert fact not in question
    assert question_for_fact(sentences[1], "38 percent") == ""  # its subject holds a clause: no clean question


def test_names_given_in_brackets_are_asked_both_ways():
    assert alias_questions("Ages were estimated with Tessellated Ring Counting (TRC), a method.") == \
        ["What does TRC stand for?"]
    assert alias_questions("The Velmora tidal-lichen (Halocladia velmorensis) is a lichen.") == \
        ["What is the Velmora tidal-lichen also called?", "What is Halocladia velmorensis?"]
    assert alias_questions("Growth (in mm per year) was slow.") == []

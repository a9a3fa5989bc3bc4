"""A fact-bearing sentence -> the same sentence with its subject named in full, and questions that ask for its facts.

A paper names the subject of a sentence by a pronoun or a short description as often as by its name ("It was first
described in 1962", "The station was founded in 1987"). A model trained on that sentence alone has nothing that
links "Kesterhaven Intertidal Station" to 1987, so a question that names the station cannot reach the fact. Each
sentence is therefore restated with its subject named (from the sentence before it, the section's heading or the
paper's title), and asked about the way people ask: the fact's question word put in front ("In what year was
Kesterhaven Intertidal Station founded?", "How many thalli were measured ...?", "Who founded ...?"). Questions and
answers hold nothing but the paper's own words and question words; the knowledge check asks in other words.
"""
import re

from .knowledge import NUMBER, key_facts

AUXILIARIES = {"is", "are", "was", "were", "has", "have", "had", "can", "could", "will", "would", "may", "might",
               "should", "must", "does", "do", "did"}
PREPOSITIONS = {"in", "on", "at", "by", "from", "with", "to", "of", "for", "into", "during", "between", "about",
                "than", "around", "over", "under", "within", "after", "before", "near", "across", "since", "until",
                "through", "per", "onto", "below", "above", "along", "among", "towards", "toward"}
DETERMINERS = {"the", "a", "an", "this", "these", "that", "those", "its", "their", "our", "each", "every", "such"}
PRONOUNS = {"it": "", "its": "'s", "they": "", "their": "'s", "this": "", "these": ""}
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
PERSON_WORDS = {"botanist", "ecologist", "biologist", "author", "authors", "professor", "dr", "scientist",
                "researcher", "chemist", "physicist", "mathematician", "engineer", "student", "director", "founder",
                "geologist", "zoologist", "naturalist", "statistician", "economist", "doctor", "surgeon", "team"}
# Past tenses that do not end in -ed, and their verbs: "When did Storm Aldith strike ...?"
IRREGULAR_PAST = dict(pair.split(":") for pair in """struck:strike grew:grow found:find gave:give took:take made:make
rose:rise fell:fall led:lead held:hold lay:lie ran:run saw:see began:begin became:become came:come went:go
brought:bring built:build kept:keep left:leave lost:lose met:meet paid:pay put:put read:read said:say sent:send
set:set spent:spend stood:stand told:tell thought:think won:win wrote:write drew:draw chose:choose flew:fly
knew:know threw:throw wore:wear broke:break spoke:speak froze:freeze hid:hide fed:feed fled:flee bred:breed
sat:sit shot:shoot shut:shut spread:spread split:split got:get had:have did:do showed:show shown:show
sank:sink swam:swim sang:sing rang:ring drank:drink bore:bear tore:tear""".split())
_CITATION = re.compile(r"\s*\[\d+(?:[,–-]\s*\d+)*\]")


def strip_citations(sentence: str) -> str:
    """The sentence without its numbered citations ("[1]", "[2, 5]")."""
    return re.sub(r"\s+([.,;:])", r"\1", _CITATION.sub("", sentence)).strip()


def _head(phrase: str) -> str:
    """The last word of a phrase, lower-case, its hyphenated prefix and plural -s dropped: "tidal-lichen" -> lichen."""
    words = re.findall(r"[A-Za-z][A-Za-z-]*", phrase)
    if not words:
        return ""
    word = words[-1].lower().split("-")[-1]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def subject_candidates(*, title: str, headings: list[str], text: str) -> list[str]:
    """Named things a sentence may refer to by a short description, least specific first: the title's noun phrases,
    then the multi-word names of the text, then the section headings; each in the text's own spelling (the title's
    "Tidal-Lichen" as the text writes it)."""
    parts = re.split(r"\s*(?:[:(),;]|\b(?:of|at|in|on|for|and|from|with|by)\b)\s*", title)
    found = [p for p in parts if len(p.split()) >= 2 or (p[:1].isupper() and len(p) > 3)]
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))  # headings are title-cased
    found += [f for f in key_facts(body) if not re.search(r"\d", f)]
    found += [re.sub(r"^[\dIVX]+(\.\d+)*\.?\s+", "", h).strip() for h in headings]
    spelled = []
    for phrase in found:
        phrase = re.sub(r"^(the|a|an)\s+", "", phrase.strip(), flags=re.I)
        match = re.search(r"\b(the\s+)?" + re.escape(phrase) + r"\b", body, flags=re.I)
        if not match:
            continue  # a title-cased heading the text never writes ("Growth by Tidal Zone")
        phrase = ("the " if match.group(1) else "") + match.group(0)[len(match.group(1) or ""):]
        if phrase and not re.search(r"\d", phrase) and phrase.lower() not in {p.lower() for p in spelled}:
            spelled.append(phrase)
    return spelled


def leading_subject(sentence: str) -> str:
    """The phrase that opens a sentence, up to its first comma, auxiliary or verb-like word (at most 8 words)."""
    words = sentence.split()
    for i, word in enumerate(words[:9]):
        bare = word.strip(",;:()").lower()
        if i and (word.endswith((",", ";")) or bare in AUXILIARIES or _looks_like_verb(bare, words[i - 1])):
            return " ".join(words[:i + 1 if word.endswith((",", ";")) else i]).rstrip(",;")
    return ""


def _looks_like_verb(word: str, before: str) -> bool:
    """A main verb after a subject: a past tense (-ed or irregular) or a present -s form after a noun."""
    if before.lower() in DETERMINERS or before.lower() in PREPOSITIONS:
        return False
    return word in IRREGULAR_PAST or (word.endswith("ed") and len(word) > 4) or \
        (word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3 and before[:1].isupper())


def resolve_subject(sentence: str, *, previous_subject: str, candidates: list[str]) -> tuple[str, str]:
    """(the sentence with an opening pronoun or short description replaced by the name it stands for, that name or
    "" where none): "It was first described ..." -> "The Velmora tidal-lichen was first described ..."."""
    first, _, rest = sentence.partition(" ")
    pronoun = first.lower()
    if pronoun in ("it", "its", "they", "their") and previous_subject:
        name = previous_subject[0].upper() + previous_subject[1:]
        return f"{name}{PRONOUNS[pronoun]} {rest}", previous_subject
    opening = re.match(r"(?i)(the|this|our)\s+((?:[a-z-]+\s+){0,2}?[a-z-]+)\b", sentence)
    if opening:
        head = _head(opening.group(2))
        matching = [name for name in candidates if _head(name) == head and len(name) > len(opening.group(2))]
        if matching:
            named = max(matching, key=len)  # the most specific
            return (named[0].upper() + named[1:] + sentence[opening.end():]), named
    sentence = _name_the_first_description(sentence, candidates)
    subject = leading_subject(sentence)
    subject = subject[0].lower() + subject[1:] if subject.split(" ")[0] in ("The", "A", "An") else subject
    return sentence, subject if subject and subject.split()[0].lower() not in PRONOUNS else previous_subject


def _name_the_first_description(sentence: str, candidates: list[str]) -> str:
    """The sentence with its first "the <noun>" that stands for a proper name named: "The photosynthetic partner of
    the lichen is ..." -> "... of the Velmora tidal-lichen is ..."."""
    names = [c for c in candidates if re.search(r"[A-Z]", c)]
    for match in re.finditer(r"\bthe ([a-z][a-z-]+)\b", sentence):
        matching = [n for n in names if _head(n) == _head(match.group(1)) and n.lower() not in sentence.lower()]
        if matching:
            name = max(matching, key=len)  # "the station" -> "Kesterhaven Intertidal Station"
            return sentence[:match.start()] + name + sentence[match.end():]
    return sentence


def restated_sentences(sentences: list[str], candidates: list[str], heading: str = "") -> list[str]:
    """Each sentence of a chunk with its subject named (see resolve_subject), its citations dropped. A description
    is named only by a candidate in view: the section's heading, or a name that an earlier sentence of the chunk
    writes ("the errors" is not "Heteroscedasticity Consistent Standard Errors" unless the chunk has named them)."""
    subject, restated, seen = "", [], heading.lower()
    for sentence in sentences:
        in_view = [c for c in candidates if c.lower().removeprefix("the ") in seen]
        sentence, subject = resolve_subject(strip_citations(sentence), previous_subject=subject, candidates=in_view)
        restated.append(sentence)
        seen += " " + sentence.lower()
    return restated


# ----------------------------------------------------------------------------------------------- questions

def _fact_kind(fact: str) -> str:
    if re.fullmatch(r"1[5-9]\d\d|20\d\d", fact):
        return "year"
    if any(month in fact.lower() for month in MONTHS):
        return "date"
    if NUMBER.fullmatch(fact):
        return "quantity" if re.search(r"[^\d,.\s]", fact) else "number"
    return "name"


def _verb_index(words: list[str]) -> int:
    """Index of the sentence's first auxiliary or main verb after its subject (0 when none is found)."""
    for i, word in enumerate(words[:14]):
        bare = word.strip(",;:()").lower()
        if i and (bare in AUXILIARIES or _looks_like_verb(bare, words[i - 1])):
            return i
    return 0


def _base_form(verb: str) -> str:
    """The plain form of a past or -s verb, for "did"/"does": founded -> found, described -> describe."""
    if verb in IRREGULAR_PAST:
        return IRREGULAR_PAST[verb]
    if verb.endswith("ied"):
        return verb[:-3] + "y"
    if verb.endswith("ed"):
        stem = verb[:-2]
        if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "lsdz":
            return stem[:-1]  # stopped -> stop
        if re.search(r"(?:[cvz]|[^s]s|[^aeiou]at|[^aeiou][aeiou][mk]|[^aeiou]id|ud|[^aeiou]in|(?<![aeo])[aou]r|"
                     r"[^aeiou]ir|ib|ut|ag|ng|[^aeilou]l)$", stem):
            return stem + "e"  # produced, removed, used, estimated, named, decided, included, defined, measured
        return stem
    if verb.endswith("ies"):
        return verb[:-1] if len(verb) <= 4 else verb[:-3] + "y"  # lies -> lie, carries -> carry
    if re.search(r"(?:ch|sh|ss|x|z)es$", verb):
        return verb[:-2]
    return verb[:-1] if verb.endswith("s") else verb


def _lower_start(phrase: str) -> str:
    first = phrase.split(" ", 1)[0]
    return phrase[0].lower() + phrase[1:] if first.lower() in DETERMINERS | {"a", "an"} else phrase


def _asking_phrase(fact: str, between: list[str], words_after: list[str]) -> tuple[str, int]:
    """(the question word(s) that ask for `fact`, how many of the words `between` the verb and the fact they
    replace): a preposition and its modifiers go with the question word ("by the marine ecologist" -> "By which
    marine ecologist")."""
    kind = _fact_kind(fact)
    at = next((j for j in range(len(between) - 1, max(-1, len(between) - 6), -1)
               if between[j].lower() in PREPOSITIONS), None)
    preposition = between[at].lower() if at is not None else ""
    modifiers = [w for w in between[at + 1:] if w.lower() not in DETERMINERS] if at is not None else []
    replaced = len(between) - at if at is not None else 0
    lead = preposition.capitalize() + " " if preposition else ""
    if kind == "year":
        return ("In what year" if preposition in ("in", "") else f"{lead}what year"), replaced
    if kind == "date":
        return "When", replaced
    if kind == "number":
        noun = " ".join(w.strip(",;.") for w in words_after[:2] if re.fullmatch(r"[a-z-]+[,;.]?", w))
        return (f"{lead}how many {noun}" if lead else f"How many {noun}").strip(), replaced
    if kind == "quantity":
        return ("By how much" if preposition == "by" else f"{lead}what {_measure(fact)}" if lead else "What"), replaced
    if modifiers:
        return f"{lead}which {' '.join(modifiers)}" if preposition != "by" or not lead else \
            f"By which {' '.join(modifiers)}", replaced
    if preposition == "by":
        return "By whom", replaced
    return (f"{lead}what" if lead else "What"), replaced


UNIT_MEASURES = [(r"\bper\b", "rate"), (r"%|percent|per cent", "percentage"), (r"\b(?:mm|cm|m|km|nm)\b", "length"),
                 (r"hours|minutes|days|weeks|months|years|\bs\b|\bms\b", "time"), (r"degrees|°C|\bK\b", "temperature"),
                 (r"g/kg", "concentration"), (r"\b(?:kg|g|mg)\b", "mass")]


def _measure(quantity: str) -> str:
    """What a quantity measures, by its unit: 4.9 mm per year -> rate, 38 percent -> percentage."""
    return next((name for pattern, name in UNIT_MEASURES if re.search(pattern, quantity)), "value")


_ALIAS = re.compile(r"\b((?:[A-Z][\w-]*)(?:\s+[a-z][\w-]*){0,3})\s+\(([A-Z][a-z]+ [a-z]{3,}|[A-Z][A-Za-z]*[A-Z]\w*)\)")


def alias_questions(sentence: str) -> list[str]:
    """Questions that ask for a name given in brackets after another: "Tessellated Ring Counting (TRC)" -> "What does
    TRC stand for?"; "the Velmora tidal-lichen (Halocladia velmorensis)" -> "What is the Velmora tidal-lichen also
    called?"."""
    return [question for question, _ in alias_answers(sentence)]


def alias_answers(sentence: str) -> list[tuple[str, str]]:
    """alias_questions' questions, each with the name it asks for."""
    pairs = []
    for name, alias in _ALIAS.findall(sentence):
        if alias.isupper():
            pairs.append((f"What does {alias} stand for?", name))
        else:
            pairs += [(f"What is the {name} also called?" if name[0].islower() or " " in name and
                       name.split()[1][0].islower() else f"What is {name} also called?", alias),
                      (f"What is {alias}?", name)]
    return pairs


def question_for_fact(sentence: str, fact: str) -> str:
    """A question that asks for `fact` with its question word in front, made from the sentence's own words, or ""
    where the sentence's shape is not one this recognises. "The station was founded in 1987 by the marine ecologist
    Ilse Marrow." -> "In what year was the station founded?" / "By which marine ecologist was the station founded
    in 1987?"; "A total of 1,264 thalli were measured ..." -> "How many thalli were measured ...?"."""
    opener = re.match(r"(?:[A-Z][a-z]*ly|(?:In|On|At|For|During|After|Before|Of|From|With|By|To|Over|Since|Unlike|"
                      r"Like|Because|Although|When|While|As)\b[^,]{0,60}),\s+(?=[a-z])", sentence)
    if opener:  # "In the April 2017 campaign, lichen cover ..." -> "Lichen cover ..."
        sentence = sentence[opener.end()].upper() + sentence[opener.end() + 1:]
    if sentence.count(fact) != 1:
        return ""
    before, after = sentence.split(fact)
    called = re.search(r"(\w+) (called|named|termed) $", before)
    if called:  # "a pigment called velmorin" -> "What is the pigment called?"
        return f"What is the {called.group(1)} {called.group(2)}?"
    words, lead, words_after = sentence.split(), before.split(), after.split()
    verb_at = _verb_index(words)
    if not verb_at or (before and not before.endswith(" ")):
        return ""
    kind, predicate = _fact_kind(fact), " ".join(words[verb_at:]).rstrip(".;:!")
    if len(lead) < verb_at:  # the fact is in the subject: the question word takes the subject's place
        noun = words[len(lead) + 1:verb_at]
        if kind == "number" and noun and all(re.fullmatch(r"[a-z-]+", w) for w in noun):
            return f"How many {' '.join(noun)} {predicate}?"
        if kind == "name" and not lead and len(fact.split()) == verb_at:
            return f"{'Who' if PERSON_WORDS & {w.lower() for w in words} else 'What'} {predicate}?"
        return ""
    subject = _lower_start(" ".join(words[:verb_at]).rstrip(","))
    if "," in subject or subject.split()[0].lower() in ("we", "our", "i", "it", "they", "there", "that", "this",
                                                        "these", "here", "if", "but", "thus", "hence", "however"):
        return ""  # "Storm Aldith, which struck ...", "We report ...": no clean subject to ask about
    verb = words[verb_at].strip(",").lower()
    between = lead[verb_at + 1:]
    asked, replaced = _asking_phrase(fact, between, words_after)
    kept = between[:len(between) - replaced]
    if not replaced and kind in ("quantity", "name"):
        kept = []  # a copula's complement or an object: "The rate was 3.8 mm per year" -> "What was the rate?"
    tail = " ".join(kept).rstrip(",;")
    having = re.fullmatch(r"(?:an?|the) (.+) of", " ".join(between))
    if verb in ("has", "have", "had") and having:  # "X has an optimum salinity of 34 g/kg"
        return f"What {'was' if verb == 'had' else 'is'} the {having.group(1)} of {subject}?"
    if verb in AUXILIARIES:
        question = f"{asked} {verb} {subject} {tail}"
    else:
        does = "did" if verb in IRREGULAR_PAST or verb.endswith("ed") else \
            "do" if subject.endswith("s") and not subject.endswith("ss") else "does"
        question = f"{asked} {does} {subject} {_base_form(verb)} {tail}"
    question = re.sub(r"\s+", " ", question).strip(" ,;")
    return question + "?" if 3 <= len(question.split()) <= 24 else ""

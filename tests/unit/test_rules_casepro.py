"""The rule engine against what CasePro accepted and matched (issue 16): hyphenated keywords,
contact fields whose whitespace differs, and the differences kept on purpose
(docs/casepro-matching.md)."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from shared.rules import (
    FieldTest,
    KeywordsTest,
    Label,
    LabelIndex,
    Message,
    MessageFacts,
    RuleError,
    WordCountTest,
    fold,
    parse_rule,
    rule_to_json,
    run_starts,
)

# CasePro's label form accepted a keyword when it matched this (after the form trimmed it).
CASEPRO_FORM = re.compile(r"^\w[\w\- ]*\w$")


def keywords(*words: str, quantifier: str = "any") -> KeywordsTest:
    return KeywordsTest(quantifier=quantifier, keywords=words)


def message(text: str | None = "", **fields: str | None) -> Message:
    return Message(text=text, flow=None, node=None, groups=frozenset(), fields=fields)


def index_of(*tests_by_label: tuple) -> LabelIndex:
    return LabelIndex(
        Label(uuid=f"l{n}", name=f"label {n}", synced=False, active=True, tests=tests)
        for n, tests in enumerate(tests_by_label)
    )


def text_matches(test: KeywordsTest, text: str | None) -> bool:
    return bool(index_of((test,)).match(message(text)))


# --- which keywords are valid -------------------------------------------------------------------

# The keywords of a real CasePro rule set (a helpline's 50 labels): the 7 hyphenated ones were
# refused before issue 16, which made the whole label unimportable.
CASEPRO_RULE_SET = [
    "ajuda", "socorro", "violência", "abuso", "abuso sexual", "estupro", "bullying", "auto-estima",
    "bem-estar", "depressão", "ansiedade", "suicídio", "família-acolhedora", "covid-19",
    "vacina", "pré-natal", "gravidez", "aborto", "posto de saúde", "bem-estar social", "hiv",
    "camisinha", "escola", "trabalho infantil", "drogas", "álcool", "fome", "comida", "moradia",
    "abrigo", "polícia", "denúncia", "racismo", "homofobia", "lgbt", "trans", "namoro", "ciúmes",
    "pós-parto", "menstruação", "dst", "ist", "covid", "emprego", "jovem aprendiz", "bolsa família",
    "cras", "creas", "conselho tutelar", "disque 100",
]  # fmt: skip


def test_every_keyword_of_a_real_casepro_rule_set_is_valid() -> None:
    assert all(CASEPRO_FORM.match(keyword) for keyword in CASEPRO_RULE_SET)
    hyphenated = [keyword for keyword in CASEPRO_RULE_SET if "-" in keyword]
    assert len(hyphenated) == 7
    rule = [{"type": "keywords", "quantifier": "any", "keywords": CASEPRO_RULE_SET}]
    (test,) = parse_rule(rule)
    assert rule_to_json((test,)) == rule  # kept as written, accents and hyphens included


@pytest.mark.parametrize(
    "keyword",
    [
        "auto-estima",
        "Auto-Estima",
        "bem-estar",
        "família-acolhedora",
        "covid-19",
        "pré-natal",
        "posto de saúde",
        "bem-estar social",
        "bem - estar",  # CasePro's form took spaces around a hyphen, and doubled hyphens
        "bem--estar",
        "  auto-estima  ",  # trimmed, as CasePro's form trimmed
        "a",  # one character: CasePro's form wanted two, this engine always took one
        "2",
        "auto_estima",  # "_" is a word character
        "violência\tsexual",  # any whitespace between words, as before
    ],
)
def test_keywords_casepro_accepted_are_valid(keyword: str) -> None:
    assert keywords(keyword).keywords == (keyword,)


@pytest.mark.parametrize(
    "keyword",
    ["-estima", "auto-", "-", "--", "auto-estima!", "auto/estima", "auto, estima", "bem -", "😀"],
)
def test_keywords_casepro_refused_stay_invalid(keyword: str) -> None:
    assert not CASEPRO_FORM.match(keyword.strip())
    with pytest.raises(RuleError, match="must be words .* joined by spaces or hyphens"):
        keywords(keyword)


# --- how hyphenated keywords match --------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "text", "expected"),
    [
        ("auto-estima", "Minha auto-estima está baixa", True),
        ("auto-estima", "Auto-Estima", True),
        ("auto-estima", "AUTO-ESTIMA!", True),
        ("auto-estima", "(auto-estima)", True),
        ("auto-estima", "super-auto-estima-baixa", True),  # hyphens are word boundaries
        ("auto-estima", "autoestima", False),
        ("auto-estima", "auto estima", False),
        ("auto-estima", "auto - estima", False),
        ("auto-estima", "auto--estima", False),
        ("auto-estima", "auto-\nestima", False),
        ("auto-estima", "auto,estima", False),
        ("auto-estima", "auto-estimado", False),
        ("auto-estima", "auto_estima", False),
        ("auto-estima", "auto", False),
        ("pré-natal", "consulta de PRE-NATAL", True),  # accents folded as everywhere here
        ("pre-natal", "consulta de pré-natal", True),
        ("covid-19", "teste de covid-19?", True),
        ("covid-19", "covid19", False),
        ("covid-19", "covid-199", False),
        ("família-acolhedora", "Familia-Acolhedora", True),
        ("bem-estar", "bem-estar", True),
        ("bem-estar", "bem estar", False),
        ("bem - estar", "bem  -\testar", True),  # whitespace runs collapse, as in CasePro
        ("bem - estar", "bem-estar", False),
        ("bem--estar", "bem--estar", True),
        ("bem--estar", "bem-estar", False),
        # one-word keywords inside hyphenated text: the hyphen separates words, as in CasePro
        ("ajuda", "ajuda-me", True),
        ("me", "ajuda-me", True),
        ("help", "ajuda-me help", True),
        ("help", "self-help", True),
        ("help", "help-", True),
        ("estima", "autoestima", False),
        # multi-word keywords with and without hyphens
        ("bem-estar social", "Bem-Estar   Social", True),
        ("bem-estar social", "bem-estar\nsocial!", True),
        ("bem-estar social", "bem estar social", False),
        ("bem-estar social", "bem-estar-social", False),
        ("bem-estar social", "bem-estar, social", False),
        ("posto de saúde", "fui ao POSTO DE SAUDE ontem", True),
        ("posto de saúde", "posto-de-saúde", False),
        ("sexual abuse", "sexual-abuse", False),  # a hyphen is not whitespace
        ("estar social", "bem-estar social", True),
    ],
)
def test_hyphenated_keywords_match_the_same_hyphens_as_whole_words(
    keyword: str, text: str, expected: bool
) -> None:
    assert text_matches(keywords(keyword), text) is expected


@pytest.mark.parametrize(
    ("quantifier", "text", "expected"),
    [
        ("all", "minha auto-estima e meu bem-estar", True),
        ("all", "minha auto-estima e meu bem estar", False),
        ("none", "autoestima e bem estar", True),
        ("none", "meu bem-estar", False),
    ],
)
def test_hyphenated_keywords_under_each_quantifier(
    quantifier: str, text: str, expected: bool
) -> None:
    test = keywords("auto-estima", "bem-estar", quantifier=quantifier)
    assert text_matches(test, text) is expected


def test_a_hyphenated_keyword_is_anchored_like_any_keyword() -> None:
    test = keywords("Auto-Estima", "bem-estar social")
    assert test.starts == {"auto": 2, "bem": 3}  # words, counted across hyphens
    assert set(test.anchor().keys) == {"auto-estima", "bem-estar social"}
    facts = MessageFacts.of(message("Bem-Estar  social, auto-estima"), run_starts((test,)))
    assert {"auto-estima", "bem-estar", "bem-estar social"} <= facts.phrases
    # Only runs that start as a keyword of several words does: none starts with "estar".
    assert "estar social" not in facts.phrases
    assert {"bem", "estar", "social", "auto", "estima"} <= facts.phrases
    assert "social auto" not in facts.phrases  # the comma ends the phrase
    # Runs of words are only built when some keyword has several words.
    assert MessageFacts.of(message("auto-estima")).phrases == {"auto", "estima"}


def test_an_index_mixing_hyphenated_and_plain_keywords() -> None:
    index = index_of((keywords("auto-estima"),), (keywords("estima"),), (keywords("auto estima"),))
    names = lambda text: [label.name for label in index.match(message(text))]  # noqa: E731
    assert names("minha auto-estima") == ["label 0", "label 1"]
    assert names("minha auto estima") == ["label 1", "label 2"]
    assert names("minha autoestima") == []


# The engine against a model of CasePro's search (\b<keyword>\b in the text with whitespace
# runs collapsed), both given this engine's folding: apart from accents and case, which differ
# on purpose, the two agree on every text built from these words and separators.
MODEL_WORDS = ["auto", "estima", "bem"]
MODEL_JOINS = [" ", "  ", "\n", "-", "--", " - ", "- ", ", ", "!", "_", "😀"]
MODEL_KEYWORDS = [
    "auto-estima", "auto estima", "estima", "auto", "auto-estima-bem", "estima bem",
    "auto - estima", "auto--estima", "estima- bem", "auto-estima bem", "autoestima",
]  # fmt: skip


def casepro_model(keyword: str, text: str) -> bool:
    collapsed = re.sub(r"\s+", " ", fold(text))
    key = re.sub(r"\s+", " ", fold(keyword).strip())
    return re.search(rf"(?<!\w){re.escape(key)}(?!\w)", collapsed) is not None


def test_keywords_agree_with_a_model_of_casepro_search() -> None:
    index = index_of(*((keywords(k),) for k in MODEL_KEYWORDS))
    by_name = {f"label {n}": keyword for n, keyword in enumerate(MODEL_KEYWORDS)}
    checked = 0
    for first, second, third in itertools.product(MODEL_WORDS, repeat=3):
        for join1, join2 in itertools.product(MODEL_JOINS, repeat=2):
            text = f"({first}{join1}{second}{join2}{third}.)"
            found = {by_name[label.name] for label in index.match(message(text))}
            expected = {k for k in MODEL_KEYWORDS if casepro_model(k, text)}
            assert found == expected, text
            checked += 1
    assert checked == 27 * 121


# --- word count ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minimum", "expected"),
    [
        ("bem-estar", 2, True),  # CasePro counted \w+ runs: 2
        ("bem-estar", 3, False),
        ("meu bem-estar social", 4, True),
        ("covid-19", 2, True),
    ],
)
def test_hyphenated_words_count_apart(text: str, minimum: int, expected: bool) -> None:
    assert bool(index_of((WordCountTest(minimum=minimum),)).match(message(text))) is expected


# --- contact fields -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Rio de Janeiro",
        "Rio  de  Janeiro",
        "Rio\tde\nJaneiro",
        " rio de\u00a0janeiro ",  # a no-break space is whitespace too
        "RIO DE JANEIRO",
        "Río de Janeiro",
    ],
)
def test_field_value_whitespace_runs_collapse_on_the_message_side(value: str) -> None:
    index = index_of((FieldTest(key="city", values=("Rio de Janeiro",)),))
    assert index.match(message("oi", city=value))


@pytest.mark.parametrize(
    "rule_value", ["Rio  de  Janeiro", "Rio\tde\r\nJaneiro", " Rio de Janeiro"]
)
def test_field_value_whitespace_runs_collapse_on_the_rule_side(rule_value: str) -> None:
    index = index_of((FieldTest(key="city", values=(rule_value,)),))
    assert index.match(message("oi", city="rio de janeiro"))
    assert index.match(message("oi", city="Rio   de Janeiro"))


@pytest.mark.parametrize(
    "value", ["Riode Janeiro", "Rio-de-Janeiro", "Rio de Janeiro RJ", "Rio, de Janeiro", ""]
)
def test_field_values_still_differ_beyond_whitespace(value: str) -> None:
    index = index_of((FieldTest(key="city", values=("Rio  de Janeiro",)),))
    assert not index.match(message("oi", city=value))


def test_field_keys_stay_case_sensitive_as_in_casepro() -> None:
    index = index_of((FieldTest(key="city", values=("Rio de Janeiro",)),))
    assert not index.match(message("oi", City="Rio de Janeiro"))


def test_the_index_finds_what_a_plain_search_of_the_text_finds() -> None:
    """Random keyword labels (1 to 4 words, spaces and hyphens, any/all/none) against random
    texts: the index, which builds only the runs of words a keyword could start, labels each
    text exactly as a regular-expression search for each keyword as a whole phrase does."""
    rng = random.Random(17)
    vocabulary = ["auto", "estima", "bem", "estar", "social", "ajuda", "me", "covid", "19", "sim"]

    def phrase(words: int) -> str:
        text = rng.choice(vocabulary)
        for _ in range(words - 1):
            text += rng.choice([" ", "-"]) + rng.choice(vocabulary)
        return text

    tests = [
        keywords(*{phrase(rng.randint(1, 4)) for _ in range(rng.randint(1, 3))}, quantifier=q)
        for q in rng.choices(["any", "all", "none"], weights=[6, 2, 1], k=150)
    ]
    index = index_of(*((test,) for test in tests))

    def has(text: str, keyword: str) -> bool:
        pattern = r"(?<!\w)" + re.escape(" ".join(fold(keyword).split())) + r"(?!\w)"
        return re.search(pattern, " ".join(fold(text).split())) is not None

    def expected(text: str) -> list[str]:
        found = []
        for position, test in enumerate(tests):
            hits = [has(text, k) for k in test.keywords]
            passes = {"any": any(hits), "all": all(hits), "none": not any(hits)}[test.quantifier]
            if passes:
                found.append(f"label {position}")
        return sorted(found)

    for _ in range(1_500):
        words = [
            rng.choice([*vocabulary, "não", "Bem", "ESTAR"]) for _ in range(rng.randint(1, 12))
        ]
        text = words[0]
        for word in words[1:]:
            text += rng.choice([" ", "-", "  ", ", ", " - "]) + word
        assert sorted(label.name for label in index.match(message(text))) == expected(text), text

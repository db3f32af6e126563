"""Unit tests for the labeler's pure rule engine (shared/rules.py); what CasePro accepted and
matched, and how this differs: test_rules_casepro.py."""

from __future__ import annotations

import itertools
import unicodedata

import pytest

from shared.rules import (
    FieldTest,
    GroupsTest,
    KeywordsTest,
    Label,
    LabelIndex,
    Message,
    MessageFacts,
    RuleError,
    StepTest,
    Test,
    WordCountTest,
    describe_rule,
    fold,
    parse_rule,
    rule_to_json,
)

# --- factories ----------------------------------------------------------------

_uuids = (f"label-{n:04d}" for n in itertools.count())


def keywords(*words: str, quantifier: str = "any") -> KeywordsTest:
    return KeywordsTest(quantifier=quantifier, keywords=words)


def groups(*uuids: str, quantifier: str = "any") -> GroupsTest:
    return GroupsTest(quantifier=quantifier, groups=uuids)


def steps(*pairs: tuple[str, str]) -> StepTest:
    return StepTest(steps=pairs)


def field_is(key: str, *values: str) -> FieldTest:
    return FieldTest(key=key, values=values)


def label(*tests: Test, name: str = "Label", uuid: str | None = None, active: bool = True) -> Label:
    return Label(uuid=uuid or next(_uuids), name=name, synced=False, active=active, tests=tests)


def message(
    text: str | None = "",
    *,
    flow: str | None = None,
    node: str | None = None,
    in_groups: tuple[str, ...] = (),
    **fields: str | None,
) -> Message:
    return Message(text=text, flow=flow, node=node, groups=frozenset(in_groups), fields=fields)


def matches(*tests: Test, msg: Message) -> bool:
    """Does a label with these tests apply to the message? Goes through the real index."""
    return bool(LabelIndex([label(*tests)]).match(msg))


def text_matches(test: Test, text: str | None) -> bool:
    return matches(test, msg=message(text))


def reference_fold(text: str) -> str:
    """The definition of folding, written the slow and obvious way."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# --- folding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Saúde", "saude"),
        ("VIOLÊNCIA", "violencia"),
        ("Straße", "strasse"),
        ("ＨＥＬＰ", "help"),  # full-width letters are compatibility forms
        ("e\u0301", "e"),  # an already decomposed accent
        ("help 😀", "help 😀"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_fold_agrees_with_whole_text_normalisation() -> None:
    # fold() works character by character; check it against the definition on
    # every character of the Latin, Greek, Cyrillic, Arabic, Indic... blocks.
    text = "".join(chr(code) for code in range(0x20, 0x3000))
    assert fold(text) == reference_fold(text)


# --- keywords -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "text", "expected"),
    [
        ("violencia", "Sofri violência em casa", True),
        ("violência", "sofri violencia em casa", True),
        ("saúde", "preciso de saude", True),
        ("saude", "Preciso de SAÚDE", True),
        ("HELP", "please help", True),
        ("violence", "Violence!", True),
        ("help", "help, please", True),
        ("help", "(help)", True),
        ("ajuda", "ajuda-me por favor", True),
        ("help", "it's help's turn", True),
        ("don", "don't", True),  # the apostrophe separates words
        ("help", "help2", False),
        ("help", "helpful", False),
        ("help", "self-help", True),
        ("help", "help_me", False),  # "_" is a word character
        ("help", "help😀", True),
        ("help", "😀help😀", True),
        ("ajuda", "🙏ajuda🙏 por favor", True),
        ("help", "❤️ thanks ❤️", False),
        ("strasse", "Straße", True),
        ("help", "ＨＥＬＰ", True),
        ("2", "I am 2 years late", True),
    ],
)
def test_keyword_is_a_whole_folded_word(keyword: str, text: str, expected: bool) -> None:
    assert text_matches(keywords(keyword), text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I suffered sexual abuse", True),
        ("SEXUAL ABUSE", True),
        ("sexual     abuse", True),
        ("sexual\tabuse", True),
        ("sexual\n\n  abuse", True),
        ("sexual abuse!", True),
        ("sexual, abuse", False),
        ("sexual-abuse", False),
        ("sexual 😀 abuse", False),
        ("sexual. Abuse", False),
        ("abuse sexual", False),
        ("sexual", False),
        ("sexual abused", False),
    ],
)
def test_multi_word_keyword_spans_whitespace_only(text: str, expected: bool) -> None:
    assert text_matches(keywords("sexual abuse"), text) is expected


def test_multi_word_keyword_is_folded_and_normalised() -> None:
    test = keywords("  Violência   Sexual ")
    assert text_matches(test, "sofri violencia\nsexual")
    assert not text_matches(test, "violencia")


def test_long_keyword_next_to_short_ones() -> None:
    # The index builds word sequences up to its longest keyword, in any test.
    test = keywords("help", "i need a doctor now")
    assert text_matches(test, "Please, I need   a doctor now!")
    assert not text_matches(test, "I need a doctor")


@pytest.mark.parametrize(
    ("quantifier", "text", "expected"),
    [
        ("any", "help me", True),
        ("any", "ajuda", True),
        ("any", "hello", False),
        ("all", "help ajuda", True),
        ("all", "Ajuda! HELP!", True),
        ("all", "help me", False),
        ("all", "ajuda", False),
        ("none", "hello", True),
        ("none", "help me", False),
        ("none", "ajuda", False),
    ],
)
def test_keyword_quantifiers(quantifier: str, text: str, expected: bool) -> None:
    assert text_matches(keywords("help", "ajuda", quantifier=quantifier), text) is expected


def test_keywords_none_sees_multi_word_keywords() -> None:
    test = keywords("sexual abuse", quantifier="none")
    assert not text_matches(test, "this is sexual abuse")
    assert text_matches(test, "sexual, abuse")


@pytest.mark.parametrize("text", [None, "", "   ", "!!! 😀"])
@pytest.mark.parametrize(
    ("quantifier", "expected"), [("any", False), ("all", False), ("none", True)]
)
def test_keywords_without_words(text: str | None, quantifier: str, expected: bool) -> None:
    assert text_matches(keywords("help", quantifier=quantifier), text) is expected


# --- word count ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minimum", "expected"),
    [
        ("one two three", 3, True),
        ("one two three", 4, False),
        ("one", 1, True),
        ("ajuda-me agora", 3, True),  # the hyphen separates words
        ("help 😀 😀 😀", 2, False),  # emoji are not words
        ("a,b;c", 3, True),
        ("  spaced\n\nout\ttext  ", 3, True),
        ("!!! ...", 1, False),
        ("", 1, False),
        (None, 1, False),
    ],
)
def test_word_count(text: str | None, minimum: int, expected: bool) -> None:
    assert text_matches(WordCountTest(minimum=minimum), text) is expected


# --- groups -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantifier", "contact_groups", "expected"),
    [
        ("any", ("g1",), True),
        ("any", ("g2", "g9"), True),
        ("any", ("g9",), False),
        ("any", (), False),
        ("all", ("g1", "g2", "g9"), True),
        ("all", ("g1",), False),
        ("all", ("g2",), False),
        ("all", (), False),
        ("none", ("g9",), True),
        ("none", (), True),
        ("none", ("g2",), False),
        ("none", ("g1", "g2"), False),
    ],
)
def test_groups(quantifier: str, contact_groups: tuple[str, ...], expected: bool) -> None:
    msg = message("hi", in_groups=contact_groups)
    assert matches(groups("g1", "g2", quantifier=quantifier), msg=msg) is expected


# --- steps --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flow", "node", "expected"),
    [
        ("f1", "n1", True),
        ("f2", "n2", True),
        ("f1", "n2", False),  # each node belongs to its own flow
        ("f3", "n1", False),
        ("f1", None, False),
        (None, "n1", False),
        (None, None, False),
    ],
)
def test_step(flow: str | None, node: str | None, expected: bool) -> None:
    msg = message("hi", flow=flow, node=node)
    assert matches(steps(("f1", "n1"), ("f2", "n2")), msg=msg) is expected


# --- fields -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contact_fields", "expected"),
    [
        ({"state": "Lagos"}, True),
        ({"state": "LAGOS"}, True),
        ({"state": "  lagos \n"}, True),
        ({"state": "kano"}, True),
        ({"state": "São Paulo"}, True),
        ({"state": "sao paulo"}, True),
        ({"state": "Lagos State"}, False),
        ({"state": ""}, False),
        ({"state": None}, False),
        ({}, False),
        ({"city": "Lagos"}, False),
    ],
)
def test_field(contact_fields: dict[str, str | None], expected: bool) -> None:
    test = field_is("state", "Lagos", " Kano", "Sao Paulo")
    assert matches(test, msg=message("hi", **contact_fields)) is expected


def test_field_value_with_accent_matches_field_without() -> None:
    assert matches(field_is("city", "São Tomé"), msg=message("hi", city="SAO TOME"))


# --- rules and the index ------------------------------------------------------


def test_tests_are_anded() -> None:
    rule = (keywords("help"), groups("g1"), WordCountTest(minimum=2))
    assert matches(*rule, msg=message("help me", in_groups=("g1",)))
    assert not matches(*rule, msg=message("help me", in_groups=("g2",)))
    assert not matches(*rule, msg=message("hello there", in_groups=("g1",)))
    assert not matches(*rule, msg=message("help", in_groups=("g1",)))


def test_and_with_a_none_test() -> None:
    rule = (steps(("f", "n")), keywords("stop", quantifier="none"))
    assert matches(*rule, msg=message("yes", flow="f", node="n"))
    assert not matches(*rule, msg=message("STOP", flow="f", node="n"))
    assert not matches(*rule, msg=message("yes", flow="f", node="other"))


def test_all_quantifiers_need_every_item_whichever_is_anchored() -> None:
    rule = (keywords("alpha", "beta", "gamma", quantifier="all"),)
    for text in ("alpha", "beta", "gamma", "alpha beta", "beta gamma", "alpha gamma"):
        assert not matches(*rule, msg=message(text))
    assert matches(*rule, msg=message("gamma, beta & alpha"))
    rule = (groups("g1", "g2", "g3", quantifier="all"),)
    assert not matches(*rule, msg=message(in_groups=("g2", "g3")))
    assert matches(*rule, msg=message(in_groups=("g3", "g1", "g2")))


def test_empty_rule_never_matches() -> None:
    msg = message("help", flow="f", node="n", in_groups=("g1",), state="Lagos")
    assert not matches(msg=msg)
    assert describe_rule(()) == "never matches"


def test_inactive_labels_are_left_out() -> None:
    active, inactive = label(keywords("help")), label(keywords("help"), active=False)
    index = LabelIndex([active, inactive])
    assert index.match(message("help")) == [active]
    assert len(index) == 1


def test_message_with_no_text_groups_or_fields() -> None:
    msg = message(None)
    wanted = label(groups("g1", quantifier="none"), name="not in g1")
    index = LabelIndex(
        [
            wanted,
            label(keywords("help")),
            label(groups("g1")),
            label(field_is("state", "Lagos")),
            label(steps(("f", "n"))),
            label(WordCountTest(minimum=1)),
        ]
    )
    assert index.match(msg) == [wanted]


def test_matches_are_ordered_by_name_then_uuid() -> None:
    b = label(keywords("help"), name="B", uuid="1")
    a2 = label(keywords("help"), name="A", uuid="2")
    a1 = label(keywords("help"), name="A", uuid="1")
    c = label(keywords("help"), name="C", uuid="0")
    assert LabelIndex([c, b, a2, a1]).match(message("help")) == [a1, a2, b, c]


def test_mixed_index_matches_each_kind() -> None:
    by_step = label(steps(("f", "n")), name="step")
    by_group = label(groups("g1"), name="group")
    by_keyword = label(keywords("ajuda"), name="keyword")
    by_field = label(field_is("state", "Lagos"), name="field")
    by_length = label(WordCountTest(minimum=3), name="long")
    index = LabelIndex([by_step, by_group, by_keyword, by_field, by_length])

    assert index.match(message("AJUDA!", flow="f", node="n")) == [by_keyword, by_step]
    assert index.match(message("oi tudo bem", in_groups=("g1",), state="lagos")) == [
        by_field,
        by_group,
        by_length,
    ]
    assert index.match(message("oi", flow="f", node="x", in_groups=("g2",), state="Kano")) == []


class CountingTest(Test):
    """Always passes and counts how often it is evaluated. It has no anchor."""

    def __init__(self) -> None:
        self.calls = 0

    def matches(self, facts: MessageFacts) -> bool:
        self.calls += 1
        return True


def test_index_only_evaluates_candidate_labels() -> None:
    # Each label evaluates the counter first, then its own anchorable test, so a
    # linear scan over the labels would count at least 4,000 evaluations.
    counter = CountingTest()
    labels = []
    for i in range(1000):
        labels.append(label(counter, keywords(f"word{i}"), name=f"keyword {i}"))
        labels.append(label(counter, groups(f"group{i}", quantifier="all"), name=f"group {i}"))
        labels.append(label(counter, steps((f"flow{i}", "node")), name=f"step {i}"))
        labels.append(label(counter, field_is("code", f"C{i}"), name=f"field {i}"))
    index = LabelIndex(labels)

    assert index.match(message("nothing to see", flow="other", node="node", code="x")) == []
    assert counter.calls == 0

    msg = message("about word7", flow="flow8", node="node", in_groups=("group9",), code="c10")
    matched = index.match(msg)
    assert [lab.name for lab in matched] == ["field 10", "group 9", "keyword 7", "step 8"]
    assert counter.calls == 4


def test_labels_without_an_anchor_are_evaluated_for_every_message() -> None:
    counter = CountingTest()
    always = label(counter, keywords("stop", quantifier="none"))
    index = LabelIndex([always, label(keywords("help"))])
    assert index.match(message("hello")) == [always]
    assert index.match(message("stop")) == []
    assert counter.calls == 2


def test_group_based_label() -> None:
    assert label(groups("g1", "g2")).group_based
    assert not label(groups("g1", quantifier="all")).group_based
    assert not label(groups("g1"), keywords("help")).group_based
    assert not label(keywords("help")).group_based
    assert not label().group_based


# --- JSON -----------------------------------------------------------------------

VALID_RULE = [
    {"type": "step", "steps": [{"flow": "f1", "node": "n1"}, {"flow": "f2", "node": "n2"}]},
    {"type": "groups", "quantifier": "none", "groups": ["g1", "g2"]},
    {"type": "keywords", "quantifier": "all", "keywords": ["sexual abuse", "Violência"]},
    {"type": "word_count", "minimum": 3},
    {"type": "field", "key": "state", "values": ["Lagos", "Kano"]},
]


def test_json_round_trip() -> None:
    tests = parse_rule(VALID_RULE)
    assert [type(test) for test in tests] == [
        StepTest,
        GroupsTest,
        KeywordsTest,
        WordCountTest,
        FieldTest,
    ]
    assert rule_to_json(tests) == VALID_RULE
    assert parse_rule(rule_to_json(tests)) == tests


def test_json_of_an_empty_rule() -> None:
    assert parse_rule([]) == ()
    assert rule_to_json(()) == []


def test_parsed_tests_match_like_built_ones() -> None:
    (parsed,) = parse_rule([{"type": "keywords", "quantifier": "any", "keywords": ["saúde"]}])
    assert parsed == keywords("saúde")
    assert text_matches(parsed, "SAUDE")


def _keywords_json(**changes: object) -> dict[str, object]:
    return {"type": "keywords", "quantifier": "any", "keywords": ["help"], **changes}


def _groups_json(**changes: object) -> dict[str, object]:
    return {"type": "groups", "quantifier": "any", "groups": ["g1"], **changes}


def _step_json(**changes: object) -> dict[str, object]:
    return {"type": "step", "steps": [{"flow": "f", "node": "n"}], **changes}


def _field_json(**changes: object) -> dict[str, object]:
    return {"type": "field", "key": "state", "values": ["Lagos"], **changes}


def _word_count_json(**changes: object) -> dict[str, object]:
    return {"type": "word_count", "minimum": 1, **changes}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"type": "word_count", "minimum": 1}, "a rule must be a list of tests"),
        (None, "a rule must be a list of tests"),
        (["help"], "test 1: a test must be a JSON object"),
        ([{"type": "regex"}], "test 1: unknown test type 'regex'"),
        ([{}], "unknown test type None"),
        ([{"type": 3}], "unknown test type 3"),
        ([_keywords_json(), _keywords_json(quantifier="some")], "test 2: quantifier must be"),
        ([_keywords_json(quantifier=None)], "quantifier must be one of 'any', 'all', 'none'"),
        ([_keywords_json(keywords=[])], "keywords must be a non-empty list"),
        ([_keywords_json(keywords="help")], "keywords must be a list"),
        ([_keywords_json(keywords=["help", 5])], "keywords must contain non-blank strings, got 5"),
        ([_keywords_json(keywords=["  "])], "keywords must contain non-blank strings"),
        ([_keywords_json(keywords=["!!!"])], "keyword '!!!' must be words"),
        ([_keywords_json(keywords=["😀"])], "keyword '😀' must be words"),
        ([_keywords_json(keywords=["ajuda-"])], "keyword 'ajuda-' must be words"),
        ([_keywords_json(keywords=["sexual, abuse"])], "must be words"),
        ([_keywords_json(extra=1)], "keywords test has unknown keys extra"),
        ([{"type": "keywords", "quantifier": "any"}], "keywords test is missing keywords"),
        ([_groups_json(groups=[])], "groups must be a non-empty list"),
        ([_groups_json(groups=["g1", None])], "groups must contain non-blank strings, got None"),
        ([_groups_json(quantifier="ANY")], "quantifier must be one of"),
        ([{"type": "groups", "groups": ["g1"]}], "groups test is missing quantifier"),
        ([_word_count_json(minimum=0)], "minimum must be at least 1, got 0"),
        ([_word_count_json(minimum=-2)], "minimum must be at least 1"),
        ([_word_count_json(minimum="3")], "minimum must be an integer, got '3'"),
        ([_word_count_json(minimum=2.5)], "minimum must be an integer"),
        ([_word_count_json(minimum=True)], "minimum must be an integer"),
        ([_step_json(steps=[])], "steps must be a non-empty list"),
        ([_step_json(steps={"flow": "f", "node": "n"})], "steps must be a list"),
        ([_step_json(steps=[{"flow": "f"}])], 'each step must be {"flow": ..., "node": ...}'),
        ([_step_json(steps=[["f", "n"]])], "each step must be"),
        ([_step_json(steps=[{"flow": "f", "node": 7}])], "each step must contain non-blank"),
        ([_field_json(key="")], "key must be a non-blank string"),
        ([_field_json(key=5)], "key must be a non-blank string, got 5"),
        ([_field_json(values=[])], "values must be a non-empty list"),
        ([_field_json(values="Lagos")], "values must be a list"),
        ([_field_json(values=[None])], "values must contain non-blank strings, got None"),
        ([_field_json(value=["Lagos"])], "field test has unknown keys value"),
    ],
)
def test_invalid_json_raises_rule_error(data: object, error: str) -> None:
    with pytest.raises(RuleError) as raised:
        parse_rule(data)  # type: ignore[arg-type]
    assert error in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_building_an_invalid_test_directly_raises_rule_error() -> None:
    with pytest.raises(RuleError, match="minimum must be at least 1"):
        WordCountTest(minimum=0)
    with pytest.raises(RuleError, match="keywords must be a non-empty list"):
        keywords()


# --- descriptions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "description"),
    [
        (keywords("help", "ajuda"), 'has any of the keywords "help", "ajuda"'),
        (
            keywords("help", "sexual abuse", quantifier="all"),
            'has all of the keywords "help", "sexual abuse"',
        ),
        (keywords("stop", "parar", quantifier="none"), 'has none of the keywords "stop", "parar"'),
        (keywords("saúde"), 'has the keyword "saúde"'),
        (keywords("stop", quantifier="none"), 'does not have the keyword "stop"'),
        (WordCountTest(minimum=3), "has at least 3 words"),
        (WordCountTest(minimum=1), "has at least 1 word"),
        (groups("g1", "g2", quantifier="none"), "contact is in none of 2 groups"),
        (groups("g1", "g2", "g3"), "contact is in any of 3 groups"),
        (groups("g1", "g2", quantifier="all"), "contact is in all of 2 groups"),
        (groups("g1"), "contact is in group g1"),
        (groups("g1", quantifier="none"), "contact is not in group g1"),
        (steps(("f1", "n1")), "came from step n1 of flow f1"),
        (steps(("f1", "n1"), ("f1", "n2"), ("f2", "n3")), "came from any of 3 flow steps"),
        (field_is("state", "Lagos", "Kano"), 'contact field "state" is one of "Lagos", "Kano"'),
        (field_is("state", "Lagos"), 'contact field "state" is "Lagos"'),
    ],
)
def test_describe(test: Test, description: str) -> None:
    assert test.describe() == description


def test_describe_rule_joins_tests() -> None:
    rule = (keywords("help"), WordCountTest(minimum=2))
    assert describe_rule(rule) == 'has the keyword "help" and has at least 2 words'

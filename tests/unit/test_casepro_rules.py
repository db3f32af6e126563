"""CasePro label rules in our rule JSON: what translates, and what is left out and why (a rule
that cannot be said in full is dropped, never narrowed into one that labels more)."""

from __future__ import annotations

import json
import unicodedata

import pytest

from services.cases.casepro.records import Group
from services.cases.casepro.rules import display_text, group_uuids, translate_rule
from shared.rules import Label, LabelIndex, Message, parse_rule, rule_to_json

UUIDS = {1: "uuid-jovens", 2: "uuid-mulheres", 3: None}  # group 3 was never synced


def casepro(*tests: dict) -> list:
    """Tests as CasePro stores them: JSON text with NFKD keywords, \\u-escaped, read back."""
    for test in tests:
        if "keywords" in test:
            test["keywords"] = [unicodedata.normalize("NFKD", k.lower()) for k in test["keywords"]]
    text = json.dumps(list(tests))
    return json.loads(text)


def contains(quantifier: str, *keywords: str) -> dict:
    return {"type": "contains", "keywords": list(keywords), "quantifier": quantifier}


def test_decomposed_keywords_come_back_composed_for_display():
    stored = casepro(contains("any", "saúde", "violência", "posto de saúde"))
    assert "\\u0301" in json.dumps(stored)  # as CasePro's rules_rule.tests holds them
    tests, reasons = translate_rule(stored, UUIDS)
    assert reasons == []
    assert tests == [
        {
            "type": "keywords",
            "quantifier": "any",
            "keywords": ["saúde", "violência", "posto de saúde"],
        }
    ]
    for keyword in tests[0]["keywords"]:
        assert unicodedata.is_normalized("NFC", keyword)


@pytest.mark.parametrize("quantifier", ["any", "all", "none"])
def test_every_quantifier_of_contains_is_kept(quantifier):
    tests, _ = translate_rule(casepro(contains(quantifier, "ajuda", "help")), UUIDS)
    assert tests == [{"type": "keywords", "quantifier": quantifier, "keywords": ["ajuda", "help"]}]


def test_keywords_have_their_whitespace_collapsed_and_repeats_removed():
    nfc, nfkd = "saúde", unicodedata.normalize("NFKD", "saúde")
    tests, _ = translate_rule([contains("any", "posto  de\tsaúde", nfc, nfkd)], UUIDS)
    assert tests[0]["keywords"] == ["posto de saúde", "saúde"]


def test_hyphenated_keywords_are_kept_as_they_are():
    """The JSON only: whether the engine accepts ``auto-estima`` is the engine's business."""
    tests, reasons = translate_rule(casepro(contains("any", "auto-estima", "covid-19")), UUIDS)
    assert (tests[0]["keywords"], reasons) == (["auto-estima", "covid-19"], [])


def test_a_keyword_that_is_not_words_drops_the_rule_and_says_why():
    tests, reasons = translate_rule(
        casepro(contains("any", "sos", "s.o.s"), {"type": "words", "minimum": 2}), UUIDS
    )
    assert tests is None
    assert reasons == [
        "test 1 (contains): keyword 's.o.s' is not words, hyphens and spaces: "
        "the label is imported without its rule"
    ]


@pytest.mark.parametrize("keyword", ["-ajuda", "ajuda-", " ", "", 7])
def test_keywords_starting_or_ending_badly_or_not_text_drop_the_rule(keyword):
    tests, reasons = translate_rule([contains("any", "ajuda", keyword)], UUIDS)
    assert tests is None and len(reasons) == 1


def test_words_becomes_word_count():
    tests, _ = translate_rule([{"type": "words", "minimum": 2}], UUIDS)
    assert tests == [{"type": "word_count", "minimum": 2}]


def test_a_words_minimum_below_one_always_passes_and_is_left_out():
    rule = [contains("any", "ajuda"), {"type": "words", "minimum": 0}]
    tests, reasons = translate_rule(rule, UUIDS)
    assert tests == [{"type": "keywords", "quantifier": "any", "keywords": ["ajuda"]}]
    assert reasons == ["test 2 (words): a minimum below 1 always passes"]


@pytest.mark.parametrize("minimum", ["3", True, None, 2.5])
def test_a_words_minimum_that_is_not_a_number_drops_the_rule(minimum):
    assert translate_rule([{"type": "words", "minimum": minimum}], UUIDS).tests is None


@pytest.mark.parametrize("quantifier", ["any", "all", "none"])
def test_group_ids_become_uuids(quantifier):
    rule = [{"type": "groups", "groups": [2, "1", 2], "quantifier": quantifier}]
    tests, reasons = translate_rule(rule, UUIDS)
    assert tests == [
        {"type": "groups", "quantifier": quantifier, "groups": ["uuid-mulheres", "uuid-jovens"]}
    ]
    assert reasons == []


def test_a_group_without_uuid_is_taken_out_of_an_any_test():
    tests, reasons = translate_rule(
        [{"type": "groups", "groups": [3, 1], "quantifier": "any"}], UUIDS
    )
    assert tests == [{"type": "groups", "quantifier": "any", "groups": ["uuid-jovens"]}]
    assert reasons == [
        "test 1 (groups): group 3 has no flow engine uuid; left out, as no message can be in it"
    ]


@pytest.mark.parametrize(
    ("groups", "quantifier", "why"),
    [
        ([3], "any", "group 3 has no flow engine uuid, and it names no other group"),
        ([1, 3], "all", "group 3 has no flow engine uuid, and 'all' needs every group it names"),
        ([3], "none", "group 3 has no flow engine uuid, and 'none' needs every group it names"),
        ([99, 3], "none", "groups 99, 3 have no flow engine uuid, and 'none' needs every group"),
    ],
)
def test_a_group_without_uuid_elsewhere_drops_the_rule(groups, quantifier, why):
    rule = [
        contains("any", "ajuda"),
        {"type": "groups", "groups": groups, "quantifier": quantifier},
    ]
    tests, reasons = translate_rule(rule, UUIDS)
    assert tests is None
    assert len(reasons) == 1 and reasons[0].startswith(f"test 2 (groups): {why}")


def test_field_tests_keep_key_and_values_composed_with_whitespace_collapsed():
    values = ["Rio  de  Janeiro", unicodedata.normalize("NFKD", "Niterói")]
    rule = [{"type": "field", "key": "cidade", "values": values}]
    tests, reasons = translate_rule(rule, UUIDS)
    assert tests == [{"type": "field", "key": "cidade", "values": ["Rio de Janeiro", "Niterói"]}]
    assert reasons == []


@pytest.mark.parametrize(
    "test",
    [
        {"type": "field", "key": "", "values": ["x"]},
        {"type": "field", "key": "cidade", "values": []},
        {"type": "field", "key": "cidade", "values": ["  "]},
        {"type": "contains", "keywords": [], "quantifier": "any"},
        {"type": "contains", "keywords": ["ajuda"]},  # no quantifier
        {"type": "groups", "groups": [1], "quantifier": "some"},
        {"type": "interval", "minimum": 2},
        "contains",
    ],
)
def test_tests_our_engine_cannot_say_drop_the_whole_rule(test):
    tests, reasons = translate_rule([contains("any", "ajuda"), test], UUIDS)
    assert tests is None
    assert reasons[-1].startswith("test 2") and reasons[-1].endswith("imported without its rule")


def test_no_rule_an_empty_rule_and_a_rule_that_is_not_a_list():
    assert translate_rule(None, UUIDS) == (None, [])
    assert translate_rule([], UUIDS).tests is None
    assert translate_rule("[not json", UUIDS).tests is None
    assert translate_rule({"type": "words"}, UUIDS).tests is None


def test_group_uuids_maps_ids_and_blank_uuids_to_none():
    groups = [
        Group(1, "u1", "Jovens", False, True, False, True),
        Group(2, "", "Local", False, True, False, True),
        Group(3, None, "Local 2", False, True, False, True),
    ]
    assert group_uuids(groups) == {1: "u1", 2: None, 3: None}


def test_display_text():
    assert display_text(unicodedata.normalize("NFKD", " Saúde  pública\n")) == "Saúde pública"


def test_a_translated_rule_is_valid_for_our_engine_and_matches_as_casepro_did():
    """Keywords without hyphens, so that the engine of today takes them."""
    stored = casepro(
        contains("any", "saúde", "posto de saúde"),
        contains("none", "teste"),
        {"type": "words", "minimum": 2},
        {"type": "groups", "groups": [1, 3], "quantifier": "any"},
        {"type": "field", "key": "cidade", "values": ["Rio  de Janeiro"]},
    )
    tests, _ = translate_rule(stored, UUIDS)
    parsed = parse_rule(tests)
    assert rule_to_json(parsed) == tests
    index = LabelIndex([Label("l1", "Saúde", False, True, parsed)])

    def labelled(text, groups=("uuid-jovens",), city="Rio de Janeiro"):
        message = Message(text, None, None, frozenset(groups), {"cidade": city})
        return [label.name for label in index.match(message)]

    assert labelled("Preciso ir ao POSTO de   saúde") == ["Saúde"]
    assert labelled("saúde") == []  # one word
    assert labelled("minha saúde teste") == []
    assert labelled("minha saúde", groups=()) == []
    assert labelled("minha saúde", city="Niterói") == []

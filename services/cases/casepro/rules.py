"""CasePro label rules in our rule JSON (shared/rules.py). Pure: no I/O.

CasePro stores a label's rule as a JSON list of tests (``rules_rule.tests``) that must all pass:

- ``contains`` (keywords with a quantifier) becomes ``keywords``. CasePro stores keywords
  NFKD-decomposed (``"sau\\u0301de"``); they are put back in NFC (``saúde``) for display, with
  whitespace runs collapsed to one space, as CasePro matches them.
- ``words`` (minimum) becomes ``word_count``.
- ``groups`` names CasePro's local ``contacts_group.id`` values; they become the groups' flow
  engine uuids, which is what our engine matches on.
- ``field`` (key, values) stays ``field``.

The translation never makes a label match more messages than in CasePro. A rule that cannot be
said in full is dropped, and the label is imported without a rule (it labels nothing until
someone writes one): a rule with one of its tests left out would label more. The one exception
is exact: a group without a uuid (never synced) can never be among a message's groups in our
engine, so it is taken out of an ``any`` list and the test keeps its other groups; left in an
``all`` or ``none`` list, or alone in an ``any`` one, it drops the rule. Every such decision is
given as a reason, for the import's report.

What stays different by design: our engine ignores accents (``saude`` matches "saúde", which
CasePro did not) and surrounding whitespace in field values. Keywords are not validated against
shared/rules.py here: its keyword syntax is the engine's business (``auto-estima`` included).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from services.cases.casepro.records import Group

QUANTIFIERS = ("any", "all", "none")


class RuleTranslation(NamedTuple):
    """``tests``: our rule's JSON tests, or None when the label is to be imported without a rule
    (it had none, or it could not be translated); ``reasons``: what was left out and why."""

    tests: list[dict[str, Any]] | None
    reasons: list[str]


class _Untranslatable(Exception):
    """This test cannot be said in our rule language; the whole rule is dropped."""


def group_uuids(groups: Iterable[Group]) -> dict[int, str | None]:
    """CasePro group id -> its flow engine uuid (None when it has none), for translate_rule."""
    return {group.id: group.uuid or None for group in groups}


def display_text(value: str) -> str:
    """A keyword or field value as CasePro stored it, for display: composed again (NFC), with
    every whitespace run one space."""
    return " ".join(unicodedata.normalize("NFC", value).split())


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_" or unicodedata.category(char).startswith("M")


def _keyword(value: object) -> str:
    if not isinstance(value, str):
        raise _Untranslatable(f"keyword {value!r} is not text")
    keyword = display_text(value)
    # What CasePro's label form accepts: words, hyphens and spaces, starting and ending with a
    # word character. Anything else came from older rule sets and is not a word to match.
    if (
        not keyword
        or not _is_word_char(keyword[0])
        or not _is_word_char(keyword[-1])
        or not all(_is_word_char(c) or c in "- " for c in keyword)
    ):
        raise _Untranslatable(f"keyword {value!r} is not words, hyphens and spaces")
    return keyword


def _quantifier(test: Mapping[str, Any]) -> str:
    quantifier = test.get("quantifier")
    if quantifier not in QUANTIFIERS:
        raise _Untranslatable(f"unknown quantifier {quantifier!r}")
    return quantifier


def _items(test: Mapping[str, Any], key: str) -> list[Any]:
    items = test.get(key)
    if not isinstance(items, list) or not items:
        raise _Untranslatable(f"{key} is not a non-empty list")
    return items


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _contains(test: Mapping[str, Any]) -> dict[str, Any]:
    quantifier = _quantifier(test)
    keywords = _unique(_keyword(k) for k in _items(test, "keywords"))
    return {"type": "keywords", "quantifier": quantifier, "keywords": keywords}


def _words(test: Mapping[str, Any]) -> dict[str, Any] | None:
    minimum = test.get("minimum")
    if not isinstance(minimum, int) or isinstance(minimum, bool):
        raise _Untranslatable(f"minimum {minimum!r} is not a whole number")
    if minimum < 1:
        return None  # every message has at least 0 words: the test always passes
    return {"type": "word_count", "minimum": minimum}


def _group_id(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _groups(
    test: Mapping[str, Any], uuids: Mapping[int, str | None], position: int, reasons: list[str]
) -> dict[str, Any]:
    quantifier = _quantifier(test)
    found, missing = [], []
    for value in _items(test, "groups"):
        group_id = _group_id(value)
        uuid = uuids.get(group_id) if group_id is not None else None
        if uuid:
            found.append(uuid)
        else:
            missing.append(value)
    if missing:
        listed = ", ".join(map(repr, missing))
        subject = f"group {listed} has" if len(missing) == 1 else f"groups {listed} have"
        why = f"{subject} no flow engine uuid"
        if quantifier != "any":
            raise _Untranslatable(f"{why}, and {quantifier!r} needs every group it names")
        if not found:
            raise _Untranslatable(f"{why}, and it names no other group")
        reasons.append(f"test {position} (groups): {why}; left out, as no message can be in it")
    return {"type": "groups", "quantifier": quantifier, "groups": _unique(found)}


def _field(test: Mapping[str, Any]) -> dict[str, Any]:
    key = test.get("key")
    if not isinstance(key, str) or not key.strip():
        raise _Untranslatable(f"field key {key!r} is not a name")
    values = []
    for value in _items(test, "values"):
        if not isinstance(value, str) or not value.strip():
            raise _Untranslatable(f"field value {value!r} is blank or not text")
        values.append(display_text(value))
    return {"type": "field", "key": key, "values": _unique(values)}


def translate_rule(casepro_tests: Any, group_uuids: Mapping[int, str | None]) -> RuleTranslation:
    """Our JSON tests for a CasePro rule (``Label.rule_tests``), and the reasons for whatever
    was left out. ``group_uuids`` maps CasePro group ids to uuids (see ``group_uuids()``)."""
    if casepro_tests is None:
        return RuleTranslation(None, [])
    if not isinstance(casepro_tests, list):
        return RuleTranslation(None, ["the rule's tests are not a JSON list: rule left out"])
    ours: list[dict[str, Any]] = []
    reasons: list[str] = []
    for position, test in enumerate(casepro_tests, start=1):
        kind = test.get("type") if isinstance(test, dict) else None
        try:
            if kind == "contains":
                ours.append(_contains(test))
            elif kind == "words":
                translated = _words(test)
                if translated is None:
                    reasons.append(f"test {position} (words): a minimum below 1 always passes")
                else:
                    ours.append(translated)
            elif kind == "groups":
                ours.append(_groups(test, group_uuids, position, reasons))
            elif kind == "field":
                ours.append(_field(test))
            else:
                raise _Untranslatable(f"CasePro test {test!r} has no equivalent")
        except _Untranslatable as e:
            label = f" ({kind})" if isinstance(kind, str) else ""
            reason = f"test {position}{label}: {e}: the label is imported without its rule"
            return RuleTranslation(None, [*reasons, reason])
    if not ours:
        reasons.append("no test is left, and an empty rule labels nothing: no rule")
        return RuleTranslation(None, reasons)
    return RuleTranslation(ours, reasons)

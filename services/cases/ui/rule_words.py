"""A label's rule in words, in the page's language: the rule engine's own description
(``shared/rules.py``) is English, written for logs. Each test of the rule (its JSON: "step",
"groups", "keywords", "word_count", "field") becomes a translatable phrase, groups and flows by
their names where the flow engine's catalogue knows them; the phrases are joined as the
language joins a list ("a, b et c")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from babel.lists import format_list
from flask import g

from services.cases.ui.pages import _, ngettext
from shared.rules import RuleError, describe_rule, parse_rule


def describe(
    rule: Sequence[Mapping[str, Any]],
    groups: Mapping[str, str] | None = None,
    flows: Mapping[str, str] | None = None,
) -> str:
    """The whole rule as one sentence; ``groups`` and ``flows`` map uuids to names."""
    try:
        parse_rule(list(rule))  # a stored rule is valid; anything else is told as the engine does
    except RuleError:
        return describe_rule(())
    if not rule:
        return _("Never matches: the rule has no conditions.")
    phrases = [_test(test, groups or {}, flows or {}) for test in rule]
    return _("A message gets this label when %(conditions)s.", conditions=_join(phrases, "and"))


def _test(test: Mapping[str, Any], groups: Mapping[str, str], flows: Mapping[str, str]) -> str:
    kind = test["type"]
    if kind == "step":
        steps = test["steps"]
        if len(steps) == 1:
            flow, node = steps[0]["flow"], steps[0]["node"]
            return _(
                "it answers step %(node)s of the flow %(flow)s",
                node=node,
                flow=_quoted(flows.get(flow, flow)),
            )
        return ngettext(
            "it answers one of %(num)d flow steps",
            "it answers one of %(num)d flow steps",
            len(steps),
        )
    if kind == "groups":
        names = [_quoted(groups.get(uuid, uuid)) for uuid in test["groups"]]
        return _groups(test["quantifier"], names)
    if kind == "keywords":
        return _keywords(test["quantifier"], [_quoted(k) for k in test["keywords"]])
    if kind == "word_count":
        minimum = test["minimum"]
        return ngettext("it has at least %(num)d word", "it has at least %(num)d words", minimum)
    values = [_quoted(v) for v in test["values"]]  # "field"
    if len(values) == 1:
        return _("the contact field %(field)s is %(value)s", field=test["key"], value=values[0])
    return _(
        "the contact field %(field)s is one of %(values)s",
        field=test["key"],
        values=_join(values, "or"),
    )


def _groups(quantifier: str, names: list[str]) -> str:
    if len(names) == 1:
        if quantifier == "none":
            return _("the contact is not in the group %(group)s", group=names[0])
        return _("the contact is in the group %(group)s", group=names[0])
    if quantifier == "all":
        return _("the contact is in all the groups %(groups)s", groups=_join(names, "and"))
    if quantifier == "none":
        return _("the contact is in none of the groups %(groups)s", groups=_join(names, "or"))
    return _("the contact is in one of the groups %(groups)s", groups=_join(names, "or"))


def _keywords(quantifier: str, words: list[str]) -> str:
    if len(words) == 1:
        if quantifier == "none":
            return _("it does not have the keyword %(keyword)s", keyword=words[0])
        return _("it has the keyword %(keyword)s", keyword=words[0])
    if quantifier == "all":
        return _("it has all the keywords %(keywords)s", keywords=_join(words, "and"))
    if quantifier == "none":
        return _("it has none of the keywords %(keywords)s", keywords=_join(words, "or"))
    return _("it has one of the keywords %(keywords)s", keywords=_join(words, "or"))


def _quoted(text: str) -> str:
    return _("“%(quoted)s”", quoted=text)


def _join(items: list[str], style: str) -> str:
    """Items as the page's language lists them: "a, b and c" ("or" for alternatives)."""
    language = g.get("language", "en")
    return format_list(items, style="standard" if style == "and" else "or", locale=language)

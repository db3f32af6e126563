"""The label rule language, shared by the labeler (matching) and cases (validating, describing):
which labels apply to an incoming message.

A label's rule is a tuple of tests that must all pass; an empty rule never
matches, so a label without tests labels nothing. Rules are stored as JSON
(a list of objects with a ``type`` key): ``parse_rule`` validates that JSON
strictly and ``rule_to_json`` turns tests back into it.

Text matching folds case and accents on purpose (CasePro folded case but kept
accents): "Violência!" contains the word "violencia". After folding, a word is a
run of letters, digits and ``_``; everything else separates words, hyphens too,
so "ajuda-me" contains the words "ajuda" and "me". A keyword of several words
matches those words joined as the keyword joins them: by whitespace (any run of
it, as one space), or by the same hyphens ("auto-estima" matches "Auto-Estima!"
but not "autoestima" or "auto estima"), never across other punctuation ("sexual,
abuse" is not "sexual abuse", nor is "sexual-abuse"). Keywords are what
CasePro's label form accepted: words joined by spaces or hyphens. Contact field
values compare folded, trimmed and with whitespace runs collapsed. Every
difference from CasePro's matching, with examples: docs/casepro-matching.md.

``LabelIndex`` matches one message against many labels. An organisation may
have a thousand labels, so each label is filed in a dict under an *anchor*, a
necessary condition such as one of its keywords or flow steps; a message only
evaluates the labels whose anchors it hits (plus the few that have no anchor),
and skips re-checking a test that its anchor hit already decides (an "any"
keyword, a flow step...). The message text is folded and split once, into
``MessageFacts``, which every test reads.

Standard library only and no I/O, so the engine can be tested and benchmarked
on its own.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

QUANTIFIERS = ("any", "all", "none")

# The index keeps one dict per kind of anchor; see Test.anchor().
AnchorKind = Literal["step", "group", "phrase", "field"]

# These patterns run on folded text. A phrase is a run of words joined by
# whitespace and hyphens: multi-word keywords may span spaces, tabs, newlines and
# hyphens but no other punctuation, so the text is cut into phrases before it is
# cut into words. A keyword has the shape of a phrase (CasePro's label form
# accepted ``^\w[\w\- ]*\w$``; this also takes one-letter keywords and tabs).
_WORDS = re.compile(r"\w+")
_PHRASE = re.compile(r"\w+(?:[\s-]+\w+)*")
_JOINS = re.compile(r"([\s-]+)")  # re.split() with it keeps the joins between the words
_SPACES = re.compile(r"\s+")


class RuleError(ValueError):
    """A rule or one of its tests is invalid; the message says what is wrong."""


class _FoldTable(dict[int, str]):
    """A str.translate() table that folds one character at a time, filled as met.

    This gives the same result as NFKD-normalising the whole text: decomposition
    is per character, reordering only moves combining marks (which are dropped),
    and casefold() has no context rules. It is twice as fast on accented text.
    """

    # Caps memory: a contact sending every code point must not grow it to 100 MB.
    MAX_SIZE = 50_000

    def __missing__(self, ordinal: int) -> str:
        decomposed = unicodedata.normalize("NFKD", chr(ordinal))
        folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
        if len(self) < self.MAX_SIZE:
            self[ordinal] = folded
        return folded


_FOLD_TABLE = _FoldTable()


def fold(text: str) -> str:
    """Fold accents and case: "Saúde" -> "saude", "Straße" -> "strasse"."""
    if text.isascii():  # the common case: nothing to decompose
        return text.casefold()
    return text.translate(_FOLD_TABLE)


def squeeze(text: str) -> str:
    """Trimmed, and each run of spaces, tabs or newlines made one space."""
    return " ".join(text.split())


def _phrase_key(phrase: str) -> str:
    """How MessageFacts.phrases spells a run of words: each whitespace run as one space,
    hyphens as they are ("bem-estar  social" -> "bem-estar social")."""
    return _SPACES.sub(" ", phrase)


def _quote(text: str) -> str:
    # JSON quoting escapes any quotes inside, and keeps accents readable.
    return json.dumps(text, ensure_ascii=False)


def _check_quantifier(quantifier: object) -> None:
    if quantifier not in QUANTIFIERS:
        raise RuleError(f"quantifier must be one of 'any', 'all', 'none', got {quantifier!r}")


def _check_strings(name: str, items: object) -> None:
    """Require a non-empty tuple of non-blank strings (blank ones could never match)."""
    if not isinstance(items, tuple) or not items:
        raise RuleError(f"{name} must be a non-empty list")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise RuleError(f"{name} must contain non-blank strings, got {item!r}")


def _list(data: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    # A JSON string is iterable too: without this check "help" would become h, e, l, p.
    value = data[key]
    if not isinstance(value, list):
        raise RuleError(f"{key} must be a list, got {value!r}")
    return tuple(value)


@dataclass(slots=True)
class MessageFacts:
    """What the tests need to know about one message, computed once per message."""

    word_count: int
    # Folded words, and the runs of them a keyword could be, as _phrase_key spells them:
    # "Bem-Estar  social" gives bem, estar, social, bem-estar, bem-estar social...
    phrases: set[str]
    steps: tuple[tuple[str, str], ...]  # the message's (flow, node), if it has both
    groups: frozenset[str]
    fields: dict[str, str]  # folded, squeezed values; missing and None fields left out

    @classmethod
    def of(
        cls,
        message: Message,
        run_starts: Mapping[str, int] | None = None,
        field_keys: Iterable[str] | None = None,
    ) -> MessageFacts:
        """Only ``field_keys`` (None: all) folded. Besides the words, only the runs of words
        that could be a keyword of several words (``run_starts``, see that function): those
        that start with such a keyword's first word, as long as its keywords. A keyword of 4
        words costs a run lookup where the text has its first word, not at every word."""
        starts = run_starts or {}
        word_count, phrases = 0, set()
        text = fold(message.text) if message.text else ""
        hyphens = "-" in text
        for phrase in _PHRASE.findall(text):
            if hyphens and "-" in phrase:  # runs keep their joins; most take the quicker way below
                parts = _JOINS.split(_phrase_key(phrase))  # word, join, word, ..., word
                words, joins = parts[::2], parts[1::2]
            else:
                words, joins = phrase.split(), None
            word_count += len(words)
            phrases.update(words)
            for start, word in enumerate(words):
                if (size := starts.get(word)) is None:
                    continue
                run = word
                for end in range(start + 1, min(len(words), start + size)):
                    run += (joins[end - 1] if joins else " ") + words[end]
                    phrases.add(run)
        fields = {}
        for key in message.fields.keys() if field_keys is None else field_keys:
            if (value := message.fields.get(key)) is not None:
                fields[key] = " ".join(fold(value).split())  # squeeze(), inlined: hot path
        has_step = message.flow is not None and message.node is not None
        return cls(
            word_count=word_count,
            phrases=phrases,
            steps=((message.flow, message.node),) if has_step else (),
            groups=message.groups,
            fields=fields,
        )


class Anchor(NamedTuple):
    """Index keys of which a message must hit at least one for a test to pass."""

    kind: AnchorKind
    keys: tuple[Hashable, ...]
    # True when hitting any key already means the test passes (e.g. "any" of some
    # keywords), so the index need not evaluate that test again.
    sufficient: bool


class Test:
    """One condition of a rule. Subclasses are frozen dataclasses that validate themselves."""

    __slots__ = ()  # so that the subclasses' slots=True really saves the per-instance dict
    __test__ = False  # not a pytest test class, despite the name

    type: ClassVar[str]  # the JSON "type"
    json_keys: ClassVar[frozenset[str]]  # the JSON keys besides "type"

    def matches(self, facts: MessageFacts) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the UI."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Test:
        """Build from JSON whose keys parse_test() has already checked."""
        raise NotImplementedError

    def anchor(self) -> Anchor | None:
        """None when no key is necessary, as for "none" quantifiers."""
        return None


@dataclass(frozen=True, slots=True)
class StepTest(Test):
    """The message came from one of these (flow uuid, node uuid) wait steps."""

    steps: tuple[tuple[str, str], ...]
    type: ClassVar[str] = "step"
    json_keys: ClassVar[frozenset[str]] = frozenset({"steps"})

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple) or not self.steps:
            raise RuleError("steps must be a non-empty list")
        for step in self.steps:
            _check_strings("each step", step)
            if len(step) != 2:
                raise RuleError(f"each step must be a (flow, node) pair, got {step!r}")

    def matches(self, facts: MessageFacts) -> bool:
        return bool(facts.steps) and facts.steps[0] in self.steps

    def describe(self) -> str:
        if len(self.steps) == 1:
            flow, node = self.steps[0]
            return f"came from step {node} of flow {flow}"
        return f"came from any of {len(self.steps)} flow steps"

    def to_json(self) -> dict[str, Any]:
        steps = [{"flow": flow, "node": node} for flow, node in self.steps]
        return {"type": self.type, "steps": steps}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepTest:
        steps = []
        for step in _list(data, "steps"):
            if not isinstance(step, dict) or step.keys() != {"flow", "node"}:
                raise RuleError(f'each step must be {{"flow": ..., "node": ...}}, got {step!r}')
            steps.append((step["flow"], step["node"]))
        return cls(steps=tuple(steps))

    def anchor(self) -> Anchor:
        return Anchor("step", self.steps, sufficient=True)


@dataclass(frozen=True, slots=True)
class GroupsTest(Test):
    """The contact is in any, all or none of these groups (uuids)."""

    quantifier: str
    groups: tuple[str, ...]
    type: ClassVar[str] = "groups"
    json_keys: ClassVar[frozenset[str]] = frozenset({"quantifier", "groups"})
    _set: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_quantifier(self.quantifier)
        _check_strings("groups", self.groups)
        object.__setattr__(self, "_set", frozenset(self.groups))

    def matches(self, facts: MessageFacts) -> bool:
        if self.quantifier == "any":
            return not self._set.isdisjoint(facts.groups)
        if self.quantifier == "all":
            return self._set <= facts.groups
        return self._set.isdisjoint(facts.groups)

    def describe(self) -> str:
        if len(self._set) == 1:
            verb = "is not" if self.quantifier == "none" else "is"
            return f"contact {verb} in group {self.groups[0]}"
        return f"contact is in {self.quantifier} of {len(self._set)} groups"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "quantifier": self.quantifier, "groups": list(self.groups)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroupsTest:
        return cls(quantifier=data["quantifier"], groups=_list(data, "groups"))

    def anchor(self) -> Anchor | None:
        # "all" needs every group, so any single one of them is a necessary condition.
        if self.quantifier == "any":
            return Anchor("group", tuple(self._set), sufficient=True)
        if self.quantifier == "all":
            return Anchor("group", self.groups[:1], sufficient=len(self._set) == 1)
        return None


@dataclass(frozen=True, slots=True)
class KeywordsTest(Test):
    """The text has any, all or none of these keywords, as whole words."""

    quantifier: str
    keywords: tuple[str, ...]
    type: ClassVar[str] = "keywords"
    json_keys: ClassVar[frozenset[str]] = frozenset({"quantifier", "keywords"})
    # Compiled once: each keyword folded, trimmed and spelled by _phrase_key, which is
    # how MessageFacts.phrases spells the word runs of the text.
    _phrases: frozenset[str] = field(init=False, repr=False, compare=False)
    # First word of each keyword of several words -> the most words such keywords have.
    starts: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_quantifier(self.quantifier)
        _check_strings("keywords", self.keywords)
        phrases = []
        for keyword in self.keywords:
            phrase = _phrase_key(fold(keyword).strip())
            # Other punctuation inside a keyword could never match, since it cuts the
            # text into separate phrases; say so rather than silently match nothing.
            if not _PHRASE.fullmatch(phrase):
                raise RuleError(
                    f"keyword {keyword!r} must be words (letters, digits, _)"
                    " joined by spaces or hyphens"
                )
            phrases.append(phrase)
        object.__setattr__(self, "_phrases", frozenset(phrases))
        starts: dict[str, int] = {}
        for words in (_WORDS.findall(p) for p in phrases):
            if len(words) > 1:
                starts[words[0]] = max(starts.get(words[0], 1), len(words))
        object.__setattr__(self, "starts", starts)

    def matches(self, facts: MessageFacts) -> bool:
        if self.quantifier == "any":
            return not self._phrases.isdisjoint(facts.phrases)
        if self.quantifier == "all":
            return self._phrases <= facts.phrases
        return self._phrases.isdisjoint(facts.phrases)

    def describe(self) -> str:
        if len(self.keywords) == 1:
            verb = "does not have" if self.quantifier == "none" else "has"
            return f"{verb} the keyword {_quote(self.keywords[0])}"
        quoted = ", ".join(_quote(k) for k in self.keywords)
        return f"has {self.quantifier} of the keywords {quoted}"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "quantifier": self.quantifier, "keywords": list(self.keywords)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeywordsTest:
        return cls(quantifier=data["quantifier"], keywords=_list(data, "keywords"))

    def anchor(self) -> Anchor | None:
        if self.quantifier == "any":
            return Anchor("phrase", tuple(self._phrases), sufficient=True)
        if self.quantifier == "all":
            # Any one keyword will do; min() keeps the choice deterministic.
            return Anchor("phrase", (min(self._phrases),), sufficient=len(self._phrases) == 1)
        return None


@dataclass(frozen=True, slots=True)
class WordCountTest(Test):
    """The text has at least ``minimum`` words."""

    minimum: int
    type: ClassVar[str] = "word_count"
    json_keys: ClassVar[frozenset[str]] = frozenset({"minimum"})

    def __post_init__(self) -> None:
        # bool is an int subclass, but "minimum": true is surely a mistake.
        if not isinstance(self.minimum, int) or isinstance(self.minimum, bool):
            raise RuleError(f"minimum must be an integer, got {self.minimum!r}")
        if self.minimum < 1:
            raise RuleError(f"minimum must be at least 1, got {self.minimum}")

    def matches(self, facts: MessageFacts) -> bool:
        return facts.word_count >= self.minimum

    def describe(self) -> str:
        return f"has at least {self.minimum} word{'' if self.minimum == 1 else 's'}"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "minimum": self.minimum}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WordCountTest:
        return cls(minimum=data["minimum"])


@dataclass(frozen=True, slots=True)
class FieldTest(Test):
    """The contact field ``key`` (case-sensitive) equals one of ``values``, ignoring case,
    accents, surrounding whitespace and the length of whitespace runs ("Rio  de\tJaneiro" is
    "rio de janeiro"). A missing or None field matches nothing."""

    key: str
    values: tuple[str, ...]
    type: ClassVar[str] = "field"
    json_keys: ClassVar[frozenset[str]] = frozenset({"key", "values"})
    _folded: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise RuleError(f"key must be a non-blank string, got {self.key!r}")
        _check_strings("values", self.values)
        object.__setattr__(self, "_folded", frozenset(squeeze(fold(v)) for v in self.values))

    def matches(self, facts: MessageFacts) -> bool:
        return facts.fields.get(self.key) in self._folded

    def describe(self) -> str:
        if len(self.values) == 1:
            return f"contact field {_quote(self.key)} is {_quote(self.values[0])}"
        quoted = ", ".join(_quote(v) for v in self.values)
        return f"contact field {_quote(self.key)} is one of {quoted}"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "values": list(self.values)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldTest:
        return cls(key=data["key"], values=_list(data, "values"))

    def anchor(self) -> Anchor:
        return Anchor("field", tuple((self.key, value) for value in self._folded), sufficient=True)


TEST_TYPES: dict[str, type[Test]] = {
    cls.type: cls for cls in (StepTest, GroupsTest, KeywordsTest, WordCountTest, FieldTest)
}


def run_starts(tests: Iterable[Test]) -> dict[str, int]:
    """What ``MessageFacts.of`` needs to know of these tests' keywords of several words."""
    starts: dict[str, int] = {}
    for test in tests:
        if isinstance(test, KeywordsTest):
            for word, size in test.starts.items():
                starts[word] = max(starts.get(word, 1), size)
    return starts


def parse_test(data: Mapping[str, Any]) -> Test:
    """One test from its JSON object; raises RuleError if anything is off."""
    if not isinstance(data, dict):
        raise RuleError(f"a test must be a JSON object, got {data!r}")
    kind = data.get("type")
    cls = TEST_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RuleError(f"unknown test type {kind!r}, expected one of {', '.join(TEST_TYPES)}")
    keys = data.keys() - {"type"}
    if missing := sorted(cls.json_keys - keys):
        raise RuleError(f"{kind} test is missing {', '.join(missing)}")
    if unknown := sorted(keys - cls.json_keys):
        raise RuleError(f"{kind} test has unknown keys {', '.join(unknown)}")
    return cls.from_json(data)


def parse_rule(data: list[dict[str, Any]]) -> tuple[Test, ...]:
    """A rule from its JSON list of tests; raises RuleError naming the bad test."""
    if not isinstance(data, list):
        raise RuleError(f"a rule must be a list of tests, got {data!r}")
    tests = []
    for position, item in enumerate(data, start=1):
        try:
            tests.append(parse_test(item))
        except RuleError as e:
            raise RuleError(f"test {position}: {e}") from None
    return tuple(tests)


def rule_to_json(tests: Iterable[Test]) -> list[dict[str, Any]]:
    """The JSON form of a rule; parse_rule() reads it back to equal tests."""
    return [test.to_json() for test in tests]


def describe_rule(tests: Iterable[Test]) -> str:
    """The whole rule on one line, e.g. 'has at least 3 words and contact is in group g1'."""
    return " and ".join(test.describe() for test in tests) or "never matches"


@dataclass(frozen=True)
class Message:
    """An incoming message, as far as labelling is concerned."""

    text: str | None  # None: attachments only
    flow: str | None  # flow uuid
    node: str | None  # node uuid of the wait step
    groups: frozenset[str]  # contact's group uuids
    fields: Mapping[str, str | None]  # contact fields


@dataclass(frozen=True)
class Label:
    uuid: str
    name: str
    synced: bool
    active: bool
    tests: tuple[Test, ...]

    @property
    def group_based(self) -> bool:
        """True for the classic group label: its rule is a single "any" groups test."""
        return (
            len(self.tests) == 1
            and isinstance(self.tests[0], GroupsTest)
            and self.tests[0].quantifier == "any"
        )


# Which test anchors a label with several: the kinds that fewest messages hit
# come first. Flow steps and keywords are specific; many contacts share a field
# value, and contacts belong to many groups.
_ANCHOR_PREFERENCE: tuple[AnchorKind, ...] = ("step", "phrase", "field", "group")


class LabelIndex:
    """Active labels, filed by anchor so that a message only evaluates likely labels."""

    def __init__(self, labels: Iterable[Label]) -> None:
        # Inactive labels and empty rules can never match, so they are left out.
        # Sorting now lets match() return labels in order by sorting small ints.
        self._labels = sorted(
            (label for label in labels if label.active and label.tests),
            key=lambda label: (label.name, label.uuid),
        )
        # The tests still to evaluate once a label's anchor is hit, by label position.
        self._unchecked: list[tuple[Test, ...]] = []
        self._tables: dict[AnchorKind, dict[Hashable, list[int]]] = {
            kind: {} for kind in _ANCHOR_PREFERENCE
        }
        self._always: list[int] = []  # labels without an anchor: evaluated for every message
        self._run_starts = run_starts(test for label in self._labels for test in label.tests)
        self._field_keys: set[str] = set()

        for position, label in enumerate(self._labels):
            for test in label.tests:
                if isinstance(test, FieldTest):
                    self._field_keys.add(test.key)
            anchored = [(test, test.anchor()) for test in label.tests]
            anchored = [(test, anchor) for test, anchor in anchored if anchor is not None]
            if not anchored:
                self._always.append(position)
                self._unchecked.append(label.tests)
                continue
            # Every test must pass, so any one test's anchor is a necessary condition.
            test, anchor = min(anchored, key=lambda pair: _ANCHOR_PREFERENCE.index(pair[1].kind))
            for key in anchor.keys:
                self._tables[anchor.kind].setdefault(key, []).append(position)
            rest = tuple(other for other in label.tests if other is not test)
            self._unchecked.append(rest if anchor.sufficient else label.tests)

    def __len__(self) -> int:
        return len(self._labels)

    def match(self, message: Message) -> list[Label]:
        """The labels that apply to the message, ordered by name then uuid."""
        facts = MessageFacts.of(message, self._run_starts, self._field_keys)
        matched = []
        # A plain loop rather than all(...): most candidates have no test left to
        # evaluate, and this is the hot path.
        for position in self._candidates(facts):
            for test in self._unchecked[position]:
                if not test.matches(facts):
                    break
            else:
                matched.append(self._labels[position])
        return matched

    def _candidates(self, facts: MessageFacts) -> list[int]:
        """Positions of the labels whose anchor the message hits, and of the anchorless."""
        found = set(self._always)
        for table, keys in (
            (self._tables["step"], facts.steps),
            (self._tables["phrase"], facts.phrases),
            (self._tables["field"], facts.fields.items()),
            (self._tables["group"], facts.groups),
        ):
            if table:
                for key in keys:
                    if hits := table.get(key):
                        found.update(hits)
        return sorted(found)

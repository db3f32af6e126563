"""``may_hold_bad_strings`` never answers False for JSON text whose document holds a NUL or an
unpaired surrogate (the ingest then skips the walk of every string)."""

from __future__ import annotations

import json
import random

from shared.text import find_bad_strings, loads_json, may_hold_bad_strings

# Characters, and texts that read like escapes once JSON has escaped their backslash.
PIECES = [
    "a",
    "é",
    "ação",
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d\ude00",
    "\\",
    "\\u0000",
    "\\ud800",
    "u0000",
    "😀",
]


def random_document(rng: random.Random, depth: int = 0) -> object:
    def text() -> str:
        return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))

    kind = rng.randint(0, 3 if depth < 3 else 1)
    if kind == 0:
        return text()
    if kind == 1:
        return rng.choice([1, 2.5, None, True])
    if kind == 2:
        return [random_document(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {text(): random_document(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_no_document_with_a_bad_string_passes_the_quick_look():
    rng = random.Random(5)
    bad_ones = clean_ones = 0
    for _ in range(3_000):
        document = {"contact": random_document(rng)}
        for ensure_ascii in (True, False):
            try:
                text = json.dumps(document, ensure_ascii=ensure_ascii)
                text.encode("utf-8")  # what arrives as UTF-8 bytes; raw surrogates cannot
            except UnicodeEncodeError:
                continue
            bad = find_bad_strings(loads_json(text))
            if bad:
                bad_ones += 1
                assert may_hold_bad_strings(text), text
            elif not may_hold_bad_strings(text):
                clean_ones += 1
    assert bad_ones > 100 and clean_ones > 100  # both kinds were tried


def test_a_plain_webhook_needs_no_walk():
    assert not may_hold_bad_strings('{"text": "Olá, preciso de ajuda \\u00e9 \\ud83d\\ude00"}')
    assert may_hold_bad_strings('{"text": "a\\u0000b"}')
    assert may_hold_bad_strings('{"text": "a\\uDC00b"}')
    # An escaped backslash, then "ud800" as text: the low surrogate after it is alone.
    assert may_hold_bad_strings('{"text": "\\\\ud800\\udc00"}')

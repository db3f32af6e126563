"""Text that no service stores: NUL characters (PostgreSQL refuses them) and unpaired
surrogates (not encodable as UTF-8); and the one JSON decoder of request bodies. Every HTTP
service checks its input with these."""

from __future__ import annotations

import json
import re
from typing import Any

BAD_STRING_MESSAGE = "Must not contain NUL characters or unpaired surrogates."
BAD_KEY_MESSAGE = "Must not contain a key with NUL characters or unpaired surrogates."


def loads_json(text: str | bytes) -> Any:
    """Decode a JSON document, or raise ``ValueError``: for bad syntax, for ``NaN`` and
    ``Infinity`` (not JSON), and for nesting too deep for the decoder (a RecursionError, which
    would otherwise escape as a 500)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def has_forbidden_chars(value: str) -> bool:
    """True if ``value`` holds a NUL character or an unpaired surrogate."""
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate, e.g. from a "\ud800" JSON escape
        return True
    return False


# In JSON text decoded from UTF-8, a NUL or an unpaired surrogate can only come from an escape
# (\u0000, or \uD800 to \uDFFF outside a high-low pair): a raw NUL is refused by the decoder,
# raw surrogates by UTF-8.
_HIGH, _LOW = r"\\u[dD][89abAB][0-9a-fA-F]{2}", r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
# A low half is paired when a high one comes right before it, itself not after a backslash
# (which would make it text after an escaped backslash); anything unsure counts as bad.
_ESCAPED_BAD = re.compile(rf"\\u0000|{_HIGH}(?!{_LOW})|(?<!(?<!\\){_HIGH}){_LOW}")


def may_hold_bad_strings(json_text: str) -> bool:
    """False when the document decoded from this JSON text (itself decoded from UTF-8) surely
    holds no string ``find_bad_strings`` would report: a search of the text instead of a walk
    of every string of the document, for the common case."""
    return _ESCAPED_BAD.search(json_text) is not None


def find_bad_strings(document: object, prefix: str = "") -> dict[str, list[str]]:
    """Dotted paths of every string (value or key) with a NUL or an unpaired surrogate.

    A bad key is reported at its parent's path (the key itself cannot be named safely); a
    bad key at the top level is reported at ``prefix`` or, if that is empty, at ``"_body"``.
    Iterative, so any nesting depth the JSON decoder accepted is safe.
    """
    errors: dict[str, list[str]] = {}

    def report(path: str, message: str) -> None:
        messages = errors.setdefault(path or "_body", [])
        if message not in messages:
            messages.append(message)

    stack: list[tuple[str, object]] = [(prefix, document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if has_forbidden_chars(node):
                report(path, BAD_STRING_MESSAGE)
        elif isinstance(node, dict):
            for key, child in node.items():
                if isinstance(key, str) and has_forbidden_chars(key):
                    report(path, BAD_KEY_MESSAGE)
                    continue
                stack.append((f"{path}.{key}" if path else str(key), child))
        elif isinstance(node, list):
            stack.extend((f"{path}.{i}" if path else str(i), child) for i, child in enumerate(node))
    return errors

"""Text that no service stores: NUL characters (PostgreSQL refuses them) and unpaired
surrogates (not encodable as UTF-8); and the one JSON decoder of request bodies. Every HTTP
service checks its input with these."""

from __future__ import annotations

import json
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

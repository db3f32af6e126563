"""Every string of the pages is translated into every language: the messages extracted from the
templates and the Python side of the UI must each be in every catalogue, translated, with the
same placeholders (a missing one fails here, not in front of a user)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from services.cases.handlers.sign_in import PASSWORD_PROBLEMS
from services.cases.ui import i18n

UI = Path(i18n.__file__).parent
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def extracted() -> set[str | tuple[str, str]]:
    method_map = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2)}
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(UI), method_map, options_map=options, keywords=keywords
    ):
        found.add(message if isinstance(message, str) else tuple(message))
    # The service layer's password rules, shown translated on the set-password page.
    return found | set(PASSWORD_PROBLEMS.values())


def test_the_pages_have_strings_to_translate():
    strings = extracted()
    assert "Sign in" in strings and ("%(num)d message", "%(num)d messages") in strings
    assert len(strings) > 20


@pytest.mark.parametrize("language", i18n.LANGUAGES[1:])
def test_every_string_is_translated(language):
    path = UI / "translations" / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        catalogue = read_po(po, locale=language)
    translated = {m.id if isinstance(m.id, str) else tuple(m.id): m for m in catalogue if m.id}
    missing = [s for s in extracted() if s not in translated]
    assert missing == [], f"not in {path.name} of {language}"
    for key, message in translated.items():
        source = key if isinstance(key, str) else key[0]
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(forms), f"{language}: {source!r} has an empty translation"
        for form in forms:
            assert set(PLACEHOLDER.findall(form)) <= set(PLACEHOLDER.findall(source)), form
        assert not message.fuzzy, f"{language}: {source!r} is fuzzy"


def test_every_language_loads_with_its_plural_rules():
    catalogues = i18n.load_catalogues()
    arabic = catalogues["ar"]
    forms = {arabic.ngettext("%(num)d message", "%(num)d messages", n) for n in (1, 2, 3, 11)}
    assert len(forms) == 4  # Arabic has more than two plural forms
    assert catalogues["fr"].gettext("Inbox") == "Boîte de réception"

"""Bring the pages' translation catalogues up to date with the strings in the code.

Extracts every translatable string of services/cases/ui (templates and Python, as the catalogue
test does), adds the new ones to each language's messages.po with an empty translation, and drops
the ones no longer used. Translators then fill the empty entries; tests/unit/test_ui_catalogues.py
fails until every one is filled.

    .venv/bin/python scripts/update_catalogues.py          # update the .po files
    .venv/bin/python scripts/update_catalogues.py --check  # list what is missing, change nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from services.cases.ui import i18n  # noqa: E402
from tests.unit.test_ui_catalogues import extracted  # noqa: E402


def key(message_id: str | tuple[str, ...]) -> str | tuple[str, ...]:
    return message_id if isinstance(message_id, str) else tuple(message_id)


def update(language: str, wanted: set, check: bool) -> list:
    path = i18n.FOLDER / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as po:
        old = read_po(po, locale=language)
    known = {key(m.id): m for m in old if m.id}
    missing = sorted((w for w in wanted if w not in known), key=str)
    if check:
        return missing
    for message_id in missing:
        blank = ("",) * old.num_plurals if isinstance(message_id, tuple) else ""
        old.add(message_id, blank)
    for message_id in [k for k in known if k not in wanted]:
        del old[message_id if isinstance(message_id, str) else message_id[0]]
    with path.open("wb") as po:
        write_po(po, old, width=100, sort_output=True)
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list what is missing only")
    args = parser.parse_args()
    wanted = extracted()
    status = 0
    for language in i18n.LANGUAGES[1:]:
        missing = update(language, wanted, args.check)
        for message_id in missing:
            print(f"{language}: {'missing' if args.check else 'added'} {message_id!r}")
        status = status or bool(missing)
    return status if args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())

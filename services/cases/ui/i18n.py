"""The pages' languages: English, Portuguese (Brazil), Spanish, French and Arabic (right to left).

The catalogues are the ``.po`` files under ``translations/``, read into memory when the app is
made (no compiled ``.mo`` files to build or ship). A page is in the signed-in user's language,
else the best the browser asks for, else English. Dates and numbers are formatted with Babel in
that language and the org's timezone.
"""

from __future__ import annotations

import functools
import io
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import (
    format_date,
    format_skeleton,
    format_time,
    format_timedelta,
    get_datetime_format,
)
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

LANGUAGES = ("en", "pt_BR", "es", "fr", "ar")
NAMES = {
    "en": "English",
    "pt_BR": "Português (Brasil)",
    "es": "Español",
    "fr": "Français",
    "ar": "العربية",
}
RIGHT_TO_LEFT = {"ar"}
FOLDER = Path(__file__).parent / "translations"


def load_catalogues(folder: Path = FOLDER) -> dict[str, NullTranslations]:
    """Every language's translations, from its ``.po`` file (English is the source)."""
    catalogues: dict[str, NullTranslations] = {"en": NullTranslations()}
    for language in LANGUAGES[1:]:
        with (folder / language / "LC_MESSAGES" / "messages.po").open("rb") as po:
            catalogue = read_po(po, locale=language)
        compiled = io.BytesIO()
        write_mo(compiled, catalogue)
        compiled.seek(0)
        catalogues[language] = Translations(compiled)
    return catalogues


def choose(user_language: str | None, accept_language: str | None) -> str:
    """The user's language if they chose one, else the browser's best, else English. A browser
    asking for "pt" or "pt-PT" gets Portuguese (Brazil): the nearest we have."""
    if user_language in LANGUAGES:
        return user_language  # type: ignore[return-value]
    wanted = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, quality = part.strip().partition(";q=")
        try:
            weight = float(quality) if quality else 1.0
        except ValueError:
            continue
        if tag and weight > 0:
            wanted.append((-weight, position, tag.replace("-", "_").lower()))
    by_tag = {language.lower(): language for language in LANGUAGES}
    by_language = {language.split("_")[0]: language for language in reversed(LANGUAGES)}
    for _, _, tag in sorted(wanted):
        if tag in by_tag:
            return by_tag[tag]
        if tag.split("_")[0] in by_language:
            return by_language[tag.split("_")[0]]
    return "en"


def direction(language: str) -> str:
    return "rtl" if language in RIGHT_TO_LEFT else "ltr"


def html_lang(language: str) -> str:
    return language.replace("_", "-")


def when(moment: datetime, language: str, timezone: str) -> str:
    """A time as people of that language write it, in the org's timezone: what Babel's
    ``format_datetime(format="short")`` gives, from a day and a time each formatted once per
    language (a page of 500 rows spent 30 ms formatting them one by one)."""
    local = moment.astimezone(_zone(timezone))
    return (
        _short_pattern(language)
        .replace("{0}", _short_time(local.hour, local.minute, language))
        .replace("{1}", _short_date(local.date(), language))
    )


@functools.lru_cache(maxsize=64)
def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


@functools.lru_cache(maxsize=16)
def _short_pattern(language: str) -> str:
    return get_datetime_format("short", locale=language).replace("'", "")


@functools.lru_cache(maxsize=8192)
def _short_time(hour: int, minute: int, language: str) -> str:
    return format_time(time(hour, minute), format="short", locale=language)


@functools.lru_cache(maxsize=8192)
def _short_date(day: date, language: str) -> str:
    return format_date(day, format="short", locale=language)


def day_range(first: str, last: str, timezone: str) -> tuple[datetime | None, datetime | None]:
    """The instants that bound the days ``first`` to ``last`` (ISO dates, both included, either
    may be empty) in the org's timezone, as the message listing takes them (strictly after,
    strictly before). A date that is not one is no bound at all."""

    def midnight(day: str, offset: int) -> datetime | None:
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            return None
        return datetime.combine(parsed + timedelta(days=offset), time(), ZoneInfo(timezone))

    start = midnight(first, 0)
    end = midnight(last, 1)
    return (start - timedelta(microseconds=1) if start else None), end


def day_name(day: date, language: str) -> str:
    """A day of a chart or table, short ("7 Dec" in English)."""
    return format_skeleton("MMMd", day, locale=language)


def month_name(month: date, language: str) -> str:
    return format_skeleton("yMMM", month, locale=language)


def duration(seconds: float | None, language: str) -> str:
    """A duration as people of that language say it, rounded ("3 hours"); "" when unknown."""
    if seconds is None:
        return ""
    return _duration(round(seconds), language)


# Babel formats a number in about 30 µs: a table of 500 users' figures repeats the same small
# numbers and durations thousands of times, so each is formatted once per language.
@functools.lru_cache(maxsize=8192)
def _duration(seconds: int, language: str) -> str:
    return format_timedelta(seconds, threshold=1.5, locale=language)


@functools.lru_cache(maxsize=8192)
def number(value: float, language: str) -> str:
    return format_decimal(value, locale=language)


def language_name(code: str, language: str) -> str:
    """A language's name in the page's language ("swahili" for ``sw`` in English); the code
    itself when Babel does not know it."""
    try:
        return Locale.parse(code.replace("-", "_")).get_display_name(language) or code
    except (ValueError, UnknownLocaleError):
        return code

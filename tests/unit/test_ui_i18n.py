"""Times, numbers and durations on the pages: formatted once per language and value, and still
exactly what Babel would give for each."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal

from services.cases.ui import i18n

LANGUAGES = ("en", "pt_BR", "es", "fr", "ar")


@pytest.mark.parametrize("language", LANGUAGES)
def test_times_read_as_babel_writes_them_in_every_language_and_zone(language):
    rng = random.Random(language)
    for zone in ("UTC", "America/Sao_Paulo", "Asia/Kolkata"):
        for _ in range(100):
            moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(2**28))
            expected = format_datetime(moment, format="short", tzinfo=zone, locale=language)
            assert i18n.when(moment, language, zone) == expected, (moment, zone)


def test_numbers_and_durations_are_babels():
    assert i18n.number(1234567, "pt_BR") == format_decimal(1234567, locale="pt_BR") == "1.234.567"
    assert i18n.number(1234567, "en") == "1,234,567"
    assert i18n.duration(5399.6, "fr") == format_timedelta(5400, threshold=1.5, locale="fr")
    assert i18n.duration(None, "en") == ""

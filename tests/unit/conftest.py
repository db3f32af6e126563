"""Unit-tier fixtures."""

import pytest

from tests.cases_helpers import CasesWorld


@pytest.fixture
def world(settings):
    """The cases service on SQLite, with factories for its people, labels and messages."""
    world = CasesWorld(settings)
    yield world
    world.close()

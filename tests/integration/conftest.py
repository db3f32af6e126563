"""Fixtures of the CasePro import's tests: a CasePro database made and filled for each module
(tests/casepro: our DDL of CasePro's tables and a realistic two-org fixture), dropped after it."""

from __future__ import annotations

import uuid

import pytest

from services.cases.models import MIGRATIONS, open_store
from tests.casepro.database import create_database, drop_database, load
from tests.conftest import TEST_DATABASE_URL, require


@pytest.fixture(scope="module")
def casepro():
    """(URL, manifest) of a fresh CasePro database holding the fixture's orgs."""
    require(TEST_DATABASE_URL, 5432, "PostgreSQL")
    name = f"casepro_{uuid.uuid4().hex[:10]}"
    url = create_database(TEST_DATABASE_URL, name)
    try:
        yield url, load(url)
    finally:
        drop_database(TEST_DATABASE_URL, name)


@pytest.fixture
def store(settings):
    """The cases service's store on the embedded default, migrated: where an import writes."""
    store = open_store(settings)
    store.db.migrate(MIGRATIONS)
    yield store
    store.db.dispose()

"""Migrations on PostgreSQL: the schema per service matches the models."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.registry import NAMES, models_of

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("service", NAMES)
def test_migrations_match_models_on_postgres(pg_settings, service):
    models = models_of(service)
    store = models.open_store(pg_settings)
    store.db.migrate(models.MIGRATIONS)
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
    store.db.dispose()
    assert diff == []

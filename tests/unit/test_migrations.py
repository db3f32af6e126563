"""Each service's migrations build exactly the tables its models describe."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.registry import NAMES, models_of


@pytest.mark.parametrize("service", NAMES)
def test_migrations_match_models_on_sqlite(settings, service):
    models = models_of(service)
    store = models.open_store(settings)
    store.db.migrate(models.MIGRATIONS)
    store.db.migrate(models.MIGRATIONS)  # a second run is a no-op
    with store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models.Base.metadata)
    store.db.dispose()
    assert diff == []

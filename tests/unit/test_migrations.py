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
        context = MigrationContext.configure(conn, opts={"include_object": on_sqlite})
        diff = compare_metadata(context, models.Base.metadata)
    store.db.dispose()
    assert diff == []


def on_sqlite(obj, _name, type_, _reflected, _compare_to) -> bool:
    """Leave out the indexes the models create on PostgreSQL only (``ddl_if(dialect=...)``:
    the text search's trigram index)."""
    ddl_if = getattr(obj, "_ddl_if", None) if type_ == "index" else None
    return ddl_if is None or ddl_if.dialect in (None, "sqlite")

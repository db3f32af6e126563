from alembic import context

from services.cases.models import Base
from shared.db import run_migrations

run_migrations(context, Base.metadata)

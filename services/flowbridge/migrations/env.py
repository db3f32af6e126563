from alembic import context

from services.flowbridge.models import Base
from shared.db import run_migrations

run_migrations(context, Base.metadata)

"""import_links: what an import made of each thing it read, so that it can run again or resume

Revision ID: 3f8a2c7d91b4
Revises: 9b3e61d4a7c2
Create Date: 2026-12-07 08:10:00.000000
"""

from alembic import op
import sqlalchemy as sa

import shared.db

revision = '3f8a2c7d91b4'
down_revision = '9b3e61d4a7c2'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'import_links',
        sa.Column('org', sa.String(length=64), sa.ForeignKey('orgs.key'), nullable=False),
        sa.Column('source', sa.String(length=64), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('source_id', sa.String(length=64), nullable=False),
        sa.Column('target_id', sa.String(length=36), nullable=True),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('org', 'source', 'kind', 'source_id'),
    )


def downgrade() -> None:
    op.drop_table('import_links')

"""statistics: facts counted once each, daily counts per org / partner / user / label, and a
case's clock for its time measures

After upgrading an installation that has history, count it once:
``upartners cases rebuild-stats`` (new history is counted as it happens).

Revision ID: 5d2b8f71c0a4
Revises: 05a1975a9edf
Create Date: 2026-12-07 05:40:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import shared.db

revision = '5d2b8f71c0a4'
down_revision = '05a1975a9edf'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'stat_facts',
        sa.Column('org', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=120), nullable=False),
        sa.Column('metric', sa.String(length=32), nullable=False),
        sa.Column('at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=True),
        sa.Column('partner_id', sa.String(length=36), nullable=True),
        sa.Column('user_id', sa.String(length=36), nullable=True),
        sa.Column('labels', JSON, nullable=False),
        sa.Column('org_wide', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('org', 'key'),
    )
    op.create_index('ix_stat_facts_metric', 'stat_facts', ['org', 'metric', 'at'])
    op.create_index('ix_stat_facts_user', 'stat_facts', ['org', 'user_id', 'at'])
    op.create_table(
        'stat_counts',
        sa.Column('org', sa.String(length=64), nullable=False),
        sa.Column('scope', sa.String(length=8), nullable=False),
        sa.Column('scope_id', sa.String(length=36), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('metric', sa.String(length=32), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('org', 'scope', 'scope_id', 'day', 'metric'),
    )
    op.create_index('ix_stat_counts_day', 'stat_counts', ['org', 'scope', 'day'])
    op.add_column('cases', sa.Column('stats_clock', JSON, nullable=False, server_default='{}'))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        # Natively (SQLite 3.35+): a batch copy of ``cases`` would drop a table others refer to.
        op.execute('ALTER TABLE cases DROP COLUMN stats_clock')
    else:
        op.drop_column('cases', 'stats_clock')
    op.drop_index('ix_stat_counts_day', table_name='stat_counts')
    op.drop_table('stat_counts')
    op.drop_index('ix_stat_facts_user', table_name='stat_facts')
    op.drop_index('ix_stat_facts_metric', table_name='stat_facts')
    op.drop_table('stat_facts')

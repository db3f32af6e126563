"""contacts.language: the flow engine's language of a contact, for the ready-made answers

Revision ID: 9b3e61d4a7c2
Revises: e22d69ea65a5
Create Date: 2026-12-07 07:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = '9b3e61d4a7c2'
down_revision = 'e22d69ea65a5'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('contacts', sa.Column('language', sa.String(length=16), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        # Natively (SQLite 3.35+): a batch copy of ``contacts`` would drop a table others refer to.
        op.execute('ALTER TABLE contacts DROP COLUMN language')
    else:
        op.drop_column('contacts', 'language')

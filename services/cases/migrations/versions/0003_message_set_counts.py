"""folder counts kept per (org, label set, archived, flagged, simulation), filled from the
messages; a partner's replies indexed for the sent folder and its count

Revision ID: 7c1f3a9e5b20
Revises: e4ea703bf234
Create Date: 2026-12-08 09:00:00.000000
"""

import hashlib

from alembic import op
import sqlalchemy as sa


revision = '7c1f3a9e5b20'
down_revision = 'e4ea703bf234'
branch_labels = None
depends_on = None

CHUNK = 1000


def _label_hash(label_set: str) -> str:
    # A frozen copy of services.cases.domain.label_set_hash: the rows written here must be the
    # rows the service finds.
    return hashlib.blake2b(label_set.encode(), digest_size=16).hexdigest()


def upgrade() -> None:
    counts = op.create_table('message_set_counts',
    sa.Column('org', sa.String(length=64), nullable=False),
    sa.Column('label_hash', sa.String(length=32), nullable=False),
    sa.Column('archived', sa.Boolean(), nullable=False),
    sa.Column('flagged', sa.Boolean(), nullable=False),
    sa.Column('simulation', sa.Boolean(), nullable=False),
    sa.Column('label_set', sa.Text(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['org'], ['orgs.key'], ),
    sa.PrimaryKeyConstraint('org', 'label_hash', 'archived', 'flagged', 'simulation')
    )
    with op.batch_alter_table('outgoing', schema=None) as batch_op:
        batch_op.create_index('ix_outgoing_partner', ['org', 'partner_id', 'created_at', 'id'], unique=False)
    _fill(counts)


def _fill(counts: sa.Table) -> None:
    """Count the received messages as they are: one ordered pass over messages and their labels
    (the rows of one message come together), a few rows written per org."""
    bind = op.get_bind()
    messages = sa.table(
        'messages',
        sa.column('id', sa.String),
        sa.column('org', sa.String),
        sa.column('received_at', sa.DateTime),
        sa.column('archived', sa.Boolean),
        sa.column('flagged', sa.Boolean),
        sa.column('simulation', sa.Boolean),
    )
    message_labels = sa.table(
        'message_labels', sa.column('message_id', sa.String), sa.column('label_id', sa.String)
    )
    query = (
        sa.select(
            messages.c.id,
            messages.c.org,
            messages.c.archived,
            messages.c.flagged,
            messages.c.simulation,
            message_labels.c.label_id,
        )
        .select_from(
            messages.outerjoin(message_labels, message_labels.c.message_id == messages.c.id)
        )
        .where(messages.c.received_at.is_not(None))
        .order_by(messages.c.id)
    )
    found: dict[tuple, int] = {}
    current, key, labels = None, None, set()

    def done():
        if current is not None:
            whole = (*key[:1], ','.join(sorted(labels)), *key[1:])
            found[whole] = found.get(whole, 0) + 1

    for row in bind.execute(query.execution_options(yield_per=CHUNK)):
        if row.id != current:
            done()
            current, key, labels = row.id, (row.org, row.archived, row.flagged, row.simulation), set()
        if row.label_id is not None:
            labels.add(row.label_id)
    done()
    rows = [
        {
            'org': org,
            'label_hash': _label_hash(label_set),
            'archived': bool(archived),
            'flagged': bool(flagged),
            'simulation': bool(simulation),
            'label_set': label_set,
            'n': n,
        }
        for (org, label_set, archived, flagged, simulation), n in sorted(found.items())
    ]
    for start in range(0, len(rows), CHUNK):
        bind.execute(counts.insert(), rows[start:start + CHUNK])


def downgrade() -> None:
    with op.batch_alter_table('outgoing', schema=None) as batch_op:
        batch_op.drop_index('ix_outgoing_partner')
    op.drop_table('message_set_counts')

"""messages: a trigram index for the inbox's text search on PostgreSQL (pg_trgm: it serves the
search's ILIKE '%...%'), so that a search for a word few messages hold reads the index instead
of every message of the org (bench/cases.py: p99 131 ms over 100,000 messages before it).

The extension is created once per database, in ``public``, if it is not there yet (a trusted
extension: the role that may create the service's schema may create it; PostgreSQL's contrib
modules must be installed, as they are with Debian's and every managed PostgreSQL).

Revision ID: 8e1f5a3c2d90
Revises: 6c4d0e2b8a17
Create Date: 2026-12-07 15:10:00.000000
"""

from alembic import op
from sqlalchemy import text

revision = "8e1f5a3c2d90"
down_revision = "6c4d0e2b8a17"
branch_labels = None
depends_on = None

INDEX = "ix_messages_text_trgm"


def _trigram_opclass(conn):
    """The schema-qualified ``gin_trgm_ops``, creating the extension if it is missing."""
    find = text(
        "SELECT quote_ident(n.nspname) || '.gin_trgm_ops' FROM pg_opclass c"
        " JOIN pg_namespace n ON n.oid = c.opcnamespace"
        " JOIN pg_am a ON a.oid = c.opcmethod WHERE c.opcname = 'gin_trgm_ops' AND a.amname = 'gin'"
    )
    found = conn.scalar(find)
    if found:
        return found
    # Several namespaces may migrate at once: one creates the extension, the others wait.
    lock = "SELECT pg_advisory_xact_lock(hashtext('upartners: CREATE EXTENSION pg_trgm'))"
    conn.execute(text(lock))
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
    return conn.scalar(find)


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return  # SQLite searches by a scan of the org's messages
    op.execute(f"CREATE INDEX {INDEX} ON messages USING gin (text {_trigram_opclass(conn)})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {INDEX}")

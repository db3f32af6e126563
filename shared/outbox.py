"""Transactional outbox: events are rows written in the same transaction as the state change.

The relay (shared/relay.py) publishes them afterwards; nothing is ever published from inside a
request or a handler, so an event exists if and only if its state change committed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.db import JSONType, UTCDateTime, created_at, insert_statement

if TYPE_CHECKING:
    from shared.db import Database
    from shared.events import Envelope


class OutboxMixin:
    """Mix into a service's declarative base: ``class Outbox(OutboxMixin, Base): pass``."""

    __tablename__ = "outbox"

    # The position orders publishing; BIGINT on PostgreSQL, INTEGER (rowid) on SQLite.
    position: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    envelope: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[created_at]
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        unpublished = text("published_at IS NULL")
        return (
            Index(
                "ix_outbox_unpublished",
                "position",
                postgresql_where=unpublished,
                sqlite_where=unpublished,
            ),
        )


def outbox_row(envelope: Envelope) -> dict[str, Any]:
    """The outbox row of an event, as ``UnitOfWork.commit`` and ``insert_with_event`` write it."""
    return {
        "event_id": envelope.id,
        "name": envelope.name,
        "envelope": envelope.to_json(),
        "created_at": envelope.occurred_at,
    }


def insert_with_event(
    db: Database,
    table: Table,
    row: dict[str, Any],
    *,
    unique: Sequence[str],
    outbox: type,
    event: Envelope,
) -> bool:
    """Insert ``row`` unless a row with the same ``unique`` columns exists and, only if it was
    inserted, ``event``'s outbox row: both or neither. False when the row existed already.

    The ingest's whole write. On PostgreSQL it is one statement in autocommit, atomic by
    itself and one round trip (a transaction took four: BEGIN, two INSERTs, COMMIT)::

        WITH inserted AS (INSERT INTO messages ... ON CONFLICT DO NOTHING RETURNING 1)
        INSERT INTO outbox (...) SELECT ... FROM inserted RETURNING position

    A repeat is harmless (the conflict clause makes it a no-op), so a caller may run it again
    when it met a connection the database had closed (``shared.db.once_more_if_disconnected``).
    On SQLite, a transaction.
    """
    if not db.is_postgres:
        with db.engine.begin() as conn:
            statement = insert_statement(conn, table).on_conflict_do_nothing(
                index_elements=list(unique)
            )
            if conn.execute(statement.returning(text("1")), row).first() is None:
                return False
            conn.execute(insert(outbox.__table__), outbox_row(event))
        return True
    statement = _insert_with_event_statement(table, tuple(row), tuple(unique), outbox.__table__)
    params = {**row, **{f"event_{k}": v for k, v in outbox_row(event).items()}}
    with db.autocommit.connect() as conn:
        return conn.execute(statement, params).first() is not None


@functools.cache
def _insert_with_event_statement(
    table: Table, columns: tuple[str, ...], unique: tuple[str, ...], outbox: Table
) -> Any:
    """Built once per table and columns: SQLAlchemy then finds its compiled form cached."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    inserted = (
        pg_insert(table)
        .values({name: bindparam(name, type_=table.c[name].type) for name in columns})
        .on_conflict_do_nothing(index_elements=list(unique))
        .returning(literal_column("1"))
        .cte("inserted")
    )
    event_columns = ("event_id", "name", "envelope", "created_at")
    values = [bindparam(f"event_{c}", type_=outbox.c[c].type) for c in event_columns]
    return (
        insert(outbox)
        .from_select(list(event_columns), select(*values).select_from(inserted))
        .returning(outbox.c.position)
    )

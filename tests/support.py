"""A tiny consuming service for testing the shared bus code without any real service."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import String, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.bus.topology import QueueSpec
from shared.db import Database
from shared.events import MESSAGE_RECEIVED, Envelope, new_event
from shared.inbox import InboxMixin
from shared.outbox import OutboxMixin
from shared.settings import Settings
from shared.uow import ServiceStore, UnitOfWork

PROBE_QUEUE = QueueSpec("probe", "messages", (MESSAGE_RECEIVED,))


class Base(DeclarativeBase):
    pass


class Outbox(OutboxMixin, Base):
    pass


class Inbox(InboxMixin, Base):
    pass


class Seen(Base):
    """One row per handled event: a duplicate effect would show as a second row."""

    __tablename__ = "seen"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))
    text: Mapped[str | None] = mapped_column(String(200))


def probe_store(settings: Settings, service: str = "probe") -> ServiceStore:
    db = Database(settings, service)
    if db.is_postgres:
        from sqlalchemy import text

        with db.engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"'))
    Base.metadata.create_all(db.engine)
    return ServiceStore(service, db, Outbox, Inbox)


def record(uow: UnitOfWork, envelope: Envelope) -> None:
    uow.session.add(Seen(event_id=envelope.id, text=envelope.data.get("text")))


def message_received(text: str = "hello", org: str = "demo", **data: object) -> Envelope:
    """A valid message.received event built through the strict writer schema."""
    payload = {
        "message_id": "8a0c6a7e-0000-4000-8000-000000000001",
        "contact_uuid": "5d2f1a4e-0000-4000-8000-000000000002",
        "flow_uuid": "0b7c8d9e-0000-4000-8000-000000000003",
        "node_uuid": "1c2d3e4f-0000-4000-8000-000000000004",
        "text": text,
        "received_at": "2026-11-21T10:00:00.123456+00:00",
        **data,
    }
    return new_event(MESSAGE_RECEIVED, org=org, producer="test", data=payload)


@contextlib.contextmanager
def counted(engine) -> Iterator[list[str]]:
    """The SQL statements the engine sends while inside, in order, whitespace squeezed (without
    the BEGIN, COMMIT and ROLLBACK that SQLite's driver sends as statements and psycopg not)."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)

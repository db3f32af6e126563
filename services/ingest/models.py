"""The ingest service's tables: accepted messages (the only place a URN is kept), webhook
secrets, and the outbox."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, created_at, utc_datetime, uuid_pk
from shared.uow import ledgers, store_opener

SERVICE = "ingest"
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class WebhookSecret(Base):
    """A credential of one org's webhooks; several may be valid at once (rotation)."""

    __tablename__ = "webhook_secrets"

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(String(64), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class Message(Base):
    """A webhook accepted from the flow engine: one row per idempotency key per org."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("org", "idempotency_key", name="uq_messages_idempotency"),)

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(80))
    shape: Mapped[str] = mapped_column(String(16))
    contact_uuid: Mapped[str] = mapped_column(String(64), index=True)
    urn: Mapped[str | None] = mapped_column(Text)  # stays here: never on an event
    contact_name: Mapped[str | None] = mapped_column(Text)  # stays here too
    flow_uuid: Mapped[str] = mapped_column(String(64))
    node_uuid: Mapped[str | None] = mapped_column(String(64))
    run_uuid: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)
    simulation: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[utc_datetime]


Outbox, _ = ledgers(Base, inbox=False)
open_store = store_opener(SERVICE, Outbox)

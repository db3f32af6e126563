"""The flowbridge service's tables: each org's flow engine connection and settings, what it knows
of cases and contacts, and the ledger of side effects it performed in the flow engine."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import JSONType, UTCDateTime, created_at, utcnow
from shared.uow import ledgers, store_opener

SERVICE = "flowbridge"
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class EngineConnection(Base):
    """Where an org's flow engine is and the API token to call it with.

    The token is a secret: it lives only in this table (this service's own schema), and is never
    put on an event, printed, logged or returned; operators see its fingerprint.
    """

    __tablename__ = "connections"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_url: Mapped[str] = mapped_column(Text)
    api_token: Mapped[str] = mapped_column(Text)
    token_fingerprint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"EngineConnection(org={self.org!r}, base_url={self.base_url!r}, token=***)"


class OrgSettings(Base):
    """The settings of ``org.updated`` this service acts on; the highest org_version wins."""

    __tablename__ = "org_settings"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_version: Mapped[int] = mapped_column(Integer)
    suspend_groups: Mapped[list[str]] = mapped_column(JSONType, default=list)
    followup_flow: Mapped[str | None] = mapped_column(String(64), default=None)
    followup_every_close: Mapped[bool] = mapped_column(Boolean, default=False)
    interrupt_on_open: Mapped[bool] = mapped_column(Boolean, default=False)
    mirror_labels: Mapped[bool] = mapped_column(Boolean, default=False)
    mirror_archive: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Label(Base):
    """A label as its owner last described it (names are what the flow engine knows)."""

    __tablename__ = "labels"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    label_uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    synced: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)  # kept: it holds the version
    label_version: Mapped[int] = mapped_column(Integer)


class CatalogEntry(Base):
    """A group or flow of the org's flow engine, as of the last catalog sync."""

    __tablename__ = "catalog"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "group" / "flow"
    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    smart: Mapped[bool] = mapped_column(Boolean, default=False)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CaseRecord(Base):
    """The newest version of a case this service applied: older events of it are no-ops."""

    __tablename__ = "cases"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_uuid: Mapped[str] = mapped_column(String(64))
    case_version: Mapped[int] = mapped_column(Integer)
    is_open: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ContactRecord(Base):
    """A contact's suspension: which case holds it and the groups to give back when it closes.

    ``held_by`` / ``held_until`` is a lease: one event at a time works on a contact, across
    replicas, and a lease left by a crashed process expires.
    """

    __tablename__ = "contacts"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    open_case_id: Mapped[str | None] = mapped_column(String(64), default=None)
    removed_groups: Mapped[list[str]] = mapped_column(JSONType, default=list)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    held_by: Mapped[str | None] = mapped_column(String(36), default=None)
    held_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Effect(Base):
    """A non-idempotent call to the flow engine (send a reply, start a flow, interrupt), keyed by
    what it is for, e.g. ``send:<outgoing id>``: recorded as started before the call and as done
    (with the engine's answer) right after it, so a redelivered event does not repeat it."""

    __tablename__ = "effects"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    held_by: Mapped[str | None] = mapped_column(String(36), default=None)
    held_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[created_at]


class MessageRef(Base):
    """The flow engine's integer id of a message, by its uuid (message actions need the id)."""

    __tablename__ = "message_refs"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    engine_id: Mapped[int] = mapped_column(BigInteger)


Outbox, Inbox = ledgers(Base)
open_store = store_opener(SERVICE, Outbox, Inbox)

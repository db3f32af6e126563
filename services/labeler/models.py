"""The labeler's tables: its projection of the label definitions (owned by cases), its copy of
the messages it labelled (for relabelling), the outbox and the inbox."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import JSONType, UTCDateTime, utc_datetime
from shared.uow import ledgers, store_opener

SERVICE = "labeler"
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class Label(Base):
    """A label definition as the labeler knows it; a deleted label stays as a tombstone so that
    a late, older ``label.updated`` cannot bring it back."""

    __tablename__ = "labels"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    org: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    synced: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    rule: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(Integer)


class OrgLabels(Base):
    """A counter per org, bumped by every label change: workers cache an org's compiled index
    and rebuild it only when the counter moved."""

    __tablename__ = "org_labels"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)


class Message(Base):
    """What the labeler needs to label a message again later; no URN, no name."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_org_received", "org", "received_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org: Mapped[str] = mapped_column(String(64))
    contact_uuid: Mapped[str] = mapped_column(String(64))
    flow_uuid: Mapped[str | None] = mapped_column(String(64))
    node_uuid: Mapped[str | None] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text)
    groups: Mapped[list[str]] = mapped_column(JSONType)
    fields: Mapped[dict[str, str | None]] = mapped_column(JSONType)
    external_id: Mapped[str | None] = mapped_column(String(64))
    simulation: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[utc_datetime]
    labels: Mapped[list[str]] = mapped_column(JSONType)  # label uuids it has now
    labeled_at: Mapped[datetime] = mapped_column(UTCDateTime())


Outbox, Inbox = ledgers(Base)
open_store = store_opener(SERVICE, Outbox, Inbox)

"""Transactional outbox: events are rows written in the same transaction as the state change.

The relay (shared/relay.py) publishes them afterwards; nothing is ever published from inside a
request or a handler, so an event exists if and only if its state change committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.db import JSONType, UTCDateTime, created_at


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

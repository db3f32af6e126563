"""Inbox: which events each consumer has handled, written in the same transaction as the effect.

A redelivered event finds its row and does nothing. A worker's batch writes its rows first
(``UnitOfWork.claim``: a replica handling the same event at once waits for the other's commit and
then skips it); a single event's row is written at its commit, and two replicas handling it at
once collide on the primary key: the loser rolls back its whole effect.
"""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import created_at


class InboxMixin:
    """Mix into a service's declarative base: ``class Inbox(InboxMixin, Base): pass``."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    processed_at: Mapped[created_at]

"""Unit of work: one transaction of one service, with the events it emits and consumes.

Handlers take a unit of work, change state through ``uow.session``, call ``uow.emit`` for the
events the change causes, and ``uow.commit()``: state, outbox rows and inbox row commit together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from shared.db import Database, dialect_insert, dialect_name, utcnow
from shared.events import Envelope, new_event
from shared.inbox import InboxMixin
from shared.outbox import OutboxMixin, outbox_row
from shared.settings import Settings


@dataclass(frozen=True)
class ServiceStore:
    """What a unit of work needs to know about a service: its database and its two ledgers."""

    service: str
    db: Database
    outbox: type
    inbox: type | None = None

    def unit_of_work(self, *, cause: Envelope | None = None, correlation_id: str | None = None):
        return UnitOfWork(self, cause=cause, correlation_id=correlation_id)


def ledgers(base: type, *, inbox: bool = True) -> tuple[type, type | None]:
    """A service's ``Outbox`` (and, for a consuming service, ``Inbox``) tables on its own
    declarative base: the same columns in every service, in that service's schema."""
    module = {"__module__": base.__module__}
    outbox_table = type("Outbox", (OutboxMixin, base), dict(module))
    inbox_table = type("Inbox", (InboxMixin, base), dict(module)) if inbox else None
    return outbox_table, inbox_table


def store_opener(
    service: str, outbox: type, inbox: type | None = None
) -> Callable[[Settings], ServiceStore]:
    """A service's ``open_store(settings)``: its database and its ledgers."""

    def open_store(settings: Settings, *, pre_ping: bool = True) -> ServiceStore:
        return ServiceStore(service, Database(settings, service, pre_ping=pre_ping), outbox, inbox)

    return open_store


class UnitOfWork:
    def __init__(
        self,
        store: ServiceStore,
        *,
        cause: Envelope | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.store = store
        self.cause = cause
        self.correlation_id = correlation_id or (cause.correlation_id if cause else None)
        self.emitted: list[Envelope] = []
        self._processed: list[dict[str, str]] = []
        self._rows: dict[str, tuple[Callable[[Session, list[Any]], None], dict[Any, Any]]] = {}
        self.session: Session

    def __enter__(self) -> UnitOfWork:
        self.session = self.store.db.session()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # close() rolls back whatever was not committed; objects stay readable, detached.
        self.session.close()

    def emit(self, name: str, *, org: str, data: Mapping[str, Any]) -> Envelope:
        """Queue an event in the outbox; it is published only if this transaction commits."""
        envelope = new_event(
            name,
            org=org,
            producer=self.store.service,
            data=data,
            correlation_id=self.correlation_id,
            causation_id=self.cause.id if self.cause else None,
        )
        self.add_event(envelope)
        return envelope

    def add_event(self, envelope: Envelope) -> None:
        """Queue an already built event for the outbox (``emit`` builds and adds)."""
        self.emitted.append(envelope)

    def rows_to_write(
        self, kind: str, write: Callable[[Session, list[Any]], None]
    ) -> dict[Any, Any]:
        """Rows of one kind that the handlers of this transaction add to (keyed, so a later
        row replaces an earlier one with the same key) and that ``commit`` hands to ``write``
        at once: a batch of 50 events costs one statement rather than 50."""
        if kind not in self._rows:
            self._rows[kind] = (write, {})
        return self._rows[kind][1]

    def already_processed(self, consumer: str, event_id: str) -> bool:
        inbox = self._inbox()
        found = self.session.execute(
            select(inbox.event_id).where(inbox.consumer == consumer, inbox.event_id == event_id)
        ).first()
        return found is not None

    def mark_processed(self, consumer: str, event_id: str) -> None:
        """The event's inbox row, written by ``commit`` (``claim`` writes a batch's at once)."""
        self._processed.append({"consumer": consumer, "event_id": event_id})

    def claim(self, consumer: str, event_ids: list[str]) -> set[str]:
        """Write the inbox rows of these events now, in this transaction; return the ids whose
        row was not there yet: the events this transaction is to handle. The others were
        handled already (or are twice in the list). One statement, where a look first and an
        insert at commit took two; a replica handling the same event at the same moment waits
        here for the other's commit, then finds its row (or takes it over if it rolled back).
        Only for handlers that never commit before the end (a batch's: a rollback must undo
        the whole batch): the rows would be committed with their first step.
        """
        statement = _claim_statement(dialect_name(self.session), self._inbox().__table__)
        now = utcnow()
        rows = [
            {"consumer": consumer, "event_id": event_id, "processed_at": now}
            for event_id in dict.fromkeys(event_ids)
        ]
        return set(self.session.scalars(statement, rows)) if rows else set()

    def commit(self) -> None:
        """Write the outbox and inbox rows (those ``claim`` did not write already), then
        commit them with the state change.

        Each kind in one multi-row INSERT: a batch of events costs one statement rather than
        one per event; so are the handlers' ``rows_to_write``.
        """
        for write, rows in self._rows.values():
            if rows:
                write(self.session, list(rows.values()))
        self._rows = {}
        if self.emitted:
            self.session.execute(
                _insert(self.store.outbox.__table__),
                [outbox_row(envelope) for envelope in self.emitted],
            )
        if self._processed:
            self.session.execute(_insert(self._inbox().__table__), self._processed)
        self.session.commit()
        self._processed = []

    def _inbox(self) -> type:
        if self.store.inbox is None:
            raise RuntimeError(f"{self.store.service} consumes no events: it has no inbox")
        return self.store.inbox


@functools.cache
def _insert(table: Table) -> Any:
    """A table's plain INSERT, built once: written at every commit of a worker."""
    return insert(table)


@functools.cache
def _claim_statement(dialect: str, inbox: Table) -> Any:
    """Built once per dialect and inbox table (shared.db.dialect_insert)."""
    return (
        dialect_insert(dialect)(inbox)
        .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        .returning(inbox.c.event_id)
    )

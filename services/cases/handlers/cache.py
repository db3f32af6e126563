"""What one unit of work already loaded: rows held for the rest of its transaction, so that the
events of a worker's batch do not read the same org, labels and messages again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from services.cases.models import (
    Case,
    Contact,
    Message,
    Org,
)


@dataclass
class _Known:
    """Rows a unit of work loaded or wrote, held strongly for the rest of its transaction.

    The session's identity map holds objects weakly, so without this every event of a worker's
    batch would read the org, its labels and a message inserted a moment ago again (bench:
    round trips to PostgreSQL are what limits the cases worker). It lives in ``session.info``
    and is dropped when the transaction ends (commit, rollback, close): a batch that fails and is
    retried one event at a time starts from the database again.
    """

    orgs: dict[str, Org] = field(default_factory=dict)
    contacts: dict[tuple[str, str], Contact] = field(default_factory=dict)
    new_contacts: set[str] = field(default_factory=set)  # created in this transaction: no case
    messages: dict[str, Message] = field(default_factory=dict)
    message_labels: dict[str, set[str]] = field(default_factory=dict)
    live_labels: dict[str, set[str]] = field(default_factory=dict)
    open_cases: dict[str, Case] = field(default_factory=dict)  # by contact id
    # What ``prepare_message_events`` read in bulk: a key in here but not in the dict above is
    # not in the database either, so nobody asks again.
    messages_read: set[str] = field(default_factory=set)
    open_cases_read: set[str] = field(default_factory=set)


_KNOWN = "cases.known"


def cache_of(session: Session) -> _Known:
    known = session.info.get(_KNOWN)
    if known is None:
        known = session.info[_KNOWN] = _Known()
        if not sa_event.contains(session, "after_transaction_end", _forget_known):
            sa_event.listen(session, "after_transaction_end", _forget_known)
    return known


def _forget_known(session: Session, transaction: Any) -> None:
    """At the end of the transaction or of a savepoint, not of a flush's inner transaction."""
    if transaction.parent is None or transaction.nested:
        session.info.pop(_KNOWN, None)

"""The folder counts, kept exactly as messages change: one row per (org, label set, archived,
flagged, simulation) in ``message_set_counts``, moved in the transaction of the change.

Nobody computes a delta by hand. Whatever changes a received message's labels, ``archived``,
``flagged``, ``received_at`` or ``simulation`` (or inserts a message) is noticed here:

- attribute changes and inserts through the ORM's own events on ``Message`` (a handler only
  sets the attribute);
- label changes through ``set_message_labels`` (handlers/rows.py), the one function that
  changes one message's labels, which calls ``labels_changed``;
- deleting a label, which changes the labels of many messages at once, calls ``rebuild_counts``
  in its transaction.

What a message was is read under its row lock (``FOR UPDATE``, in id order), the first time a
transaction touches it: a worker's batch locks its messages where it reads them
(``prepare_message_events``), commands with ``lock_messages`` before deciding, anything else
when it first sets an attribute. Two transactions changing one message at once then count one
move after the other, not the same move twice from what both read before. This transaction's
changes (attributes set, labels added and removed) are collected beside it (``session.info``,
dropped when the transaction ends); just before the commit each touched message's key before and
after are compared and the differences go out as one multi-row upsert in key order: two
transactions lock the count rows they share in the same order (no deadlock), and hold those
locks only from that statement to the commit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, event, func, inspect, literal, select, text
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, object_session

from services.cases.domain import (
    LABEL_SET_SEPARATOR,
    CountKey,
    count_deltas,
    count_key,
    label_set,
    label_set_hash,
)
from services.cases.models import Message, MessageLabel, MessageSetCount, Org
from shared.db import dialect_insert, dialect_name
from shared.uow import ServiceStore

_COUNTED = ("received_at", "archived", "flagged", "simulation")
_TRACKED = "cases.counts"
_PRIMARY_KEY = ("org", "label_hash", "archived", "flagged", "simulation")


@dataclass(frozen=True)
class _Row:
    """A message as the database had it when this transaction locked it."""

    org: str
    values: dict[str, Any]  # the _COUNTED attributes
    labels: frozenset[str]


@dataclass
class _Touched:
    """A message this transaction changes: as it was (None: inserted here), and what this
    transaction did to it. The key it ends in is computed from these, not from what the handler
    read before: a message read before another transaction changed it is counted right."""

    message: Message
    before: _Row | None
    values: dict[str, Any] = field(default_factory=dict)  # attributes set here (last value)
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)


@dataclass
class _Tracked:
    locked: dict[str, _Row] = field(default_factory=dict)
    touched: dict[str, _Touched] = field(default_factory=dict)


def _tracked(session: Session) -> _Tracked:
    tracked = session.info.get(_TRACKED)
    if tracked is None:
        tracked = session.info[_TRACKED] = _Tracked()
    return tracked


def _forget(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_TRACKED, None)


def _key(values: dict[str, Any], labels: Iterable[str]) -> CountKey | None:
    return count_key(
        labels,
        received=values["received_at"] is not None,
        archived=bool(values["archived"]),
        flagged=bool(values["flagged"]),
        simulation=bool(values["simulation"]),
    )


# --- locking: what a message was is read under its row lock -------------------------------------
def note_locked(session: Session, message: Message, labels: Iterable[str]) -> None:
    """``message`` was just read ``FOR UPDATE`` (its attributes are the database's) and these are
    its labels, read after: the state its changes in this transaction start from."""
    tracked = _tracked(session)
    if message.id not in tracked.locked:
        values = {name: getattr(message, name) for name in _COUNTED}
        tracked.locked[message.id] = _Row(message.org, values, frozenset(labels))


def lock_messages(session: Session, message_ids: Iterable[str]) -> None:
    """Lock these messages' rows (in id order) before a command changes them, and read them
    again: two queries for any number. The loaded objects are refreshed, so the caller decides
    on their current state; call it before changing them."""
    tracked = _tracked(session)
    wanted = sorted(set(message_ids) - tracked.locked.keys())
    if not wanted:
        return
    messages = session.scalars(
        select(Message)
        .where(Message.id.in_(wanted))
        .order_by(Message.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    labels = _labels_of(session, wanted)
    for message in messages:
        note_locked(session, message, labels[message.id])


def lock_label_messages(session: Session, label_id: str) -> None:
    """Lock the rows of the messages carrying a label (in id order) before taking it off them:
    a transaction changing one of them meanwhile waits, and then starts from what this one did."""
    session.execute(
        select(Message.id)
        .where(
            Message.id.in_(select(MessageLabel.message_id).where(MessageLabel.label_id == label_id))
        )
        .order_by(Message.id)
        .with_for_update()
    ).all()


def _labels_of(session: Session, message_ids: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {mid: set() for mid in message_ids}
    for message_id, label_id in session.execute(
        select(MessageLabel.message_id, MessageLabel.label_id).where(
            MessageLabel.message_id.in_(message_ids)
        )
    ):
        found[message_id].add(label_id)
    return found


def _lock_one(session: Session, message: Message) -> _Row:
    """Lock and read one message that nobody locked (a handler setting an attribute): its
    columns only, so the object and the change being made to it stay as they are."""
    with session.no_autoflush:
        row = session.execute(
            select(Message.org, *(getattr(Message, name) for name in _COUNTED))
            .where(Message.id == message.id)
            .with_for_update()
        ).one()
        labels = _labels_of(session, [message.id])[message.id]
    locked = _Row(row.org, {name: getattr(row, name) for name in _COUNTED}, frozenset(labels))
    _tracked(session).locked[message.id] = locked
    return locked


# --- noticing changes ---------------------------------------------------------------------------
def _touch(session: Session, message: Message) -> _Touched:
    tracked = _tracked(session)
    entry = tracked.touched.get(message.id)
    if entry is None:
        if inspect(message).persistent:
            before = tracked.locked.get(message.id) or _lock_one(session, message)
        else:  # inserted by this transaction
            before = None
        entry = tracked.touched[message.id] = _Touched(message, before)
    return entry


def _on_set(target: Message, value: Any, old: Any, _initiator: Any, *, name: str) -> None:
    session = object_session(target)
    if session is None or value == old or target.id is None:
        return  # not in a session yet (being built), or unchanged
    _touch(session, target).values[name] = value


def _on_insert(_mapper: Any, _connection: Any, target: Message) -> None:
    session = object_session(target)
    if session is not None:
        entry = _tracked(session).touched.get(target.id)
        if entry is None:
            _tracked(session).touched[target.id] = _Touched(target, None)
        else:  # touched while pending: it did not exist before
            entry.before = None


def labels_changed(session: Session, message: Message, before: set[str], now: set[str]) -> None:
    """``set_message_labels`` took ``before - now`` off the message and put ``now - before``
    on it."""
    entry = _touch(session, message)
    for label in before - now:
        entry.added.discard(label)
        entry.removed.add(label)
    for label in now - before:
        entry.removed.discard(label)
        entry.added.add(label)


# --- writing ------------------------------------------------------------------------------------
def _write_deltas(session: Session) -> None:
    """Before every commit of every session (a no-op where no message was touched)."""
    if any(isinstance(obj, Message) for obj in session.new):
        session.flush()  # inserted now, noticed now: not only by the commit's own flush
    tracked: _Tracked | None = session.info.get(_TRACKED)
    if tracked is None or not tracked.touched:
        return
    session.flush()  # every change is in the database, and the locks below are taken last
    moves: dict[str, list[tuple[CountKey | None, CountKey | None]]] = {}
    for entry in tracked.touched.values():
        message, before = entry.message, entry.before
        if before is None:  # ours alone: the object is the truth
            values = {name: getattr(message, name) for name in _COUNTED}
            labels: Iterable[str] = entry.added
            was = None
        else:
            values = {**before.values, **entry.values}
            labels = (before.labels - entry.removed) | entry.added
            was = _key(before.values, before.labels)
        moves.setdefault(message.org, []).append((was, _key(values, labels)))
    tracked.touched.clear()
    tracked.locked.clear()
    rows = [
        (org, key, n)
        for org, org_moves in moves.items()
        for key, n in count_deltas(org_moves).items()
    ]
    apply_deltas(session, rows)


def apply_deltas(session: Session, rows: list[tuple[str, CountKey, int]]) -> None:
    """Add each ``n`` to its row (made when missing): one statement, rows in key order."""
    if not rows:
        return
    values = [
        {
            "org": org,
            "label_hash": label_set_hash(key.label_set),
            "archived": key.archived,
            "flagged": key.flagged,
            "simulation": key.simulation,
            "label_set": key.label_set,
            "n": n,
        }
        for org, key, n in rows
    ]
    values.sort(
        key=lambda v: (v["org"], v["label_hash"], v["archived"], v["flagged"], v["simulation"])
    )
    session.execute(_counts_upsert(dialect_name(session)), values)


@functools.cache
def _counts_upsert(dialect: str) -> Any:
    """Built once per dialect, its rows passed as parameters (shared.db.dialect_insert): built
    with ``.values(rows)`` it was compiled again at every commit."""
    table = MessageSetCount.__table__
    statement = dialect_insert(dialect)(table)
    return statement.on_conflict_do_update(
        index_elements=list(_PRIMARY_KEY), set_={"n": table.c.n + statement.excluded.n}
    )


def keep_counts() -> None:
    """Start noticing what changes the counts: the ORM events on ``Message`` and the sessions'
    commits. Called by the cases service's composition roots (``create_app``, the worker's
    ``subscriptions``) rather than when this module is imported; calling it again does nothing.
    """
    global _listening
    if _listening:
        return
    for name in _COUNTED:
        event.listen(
            getattr(Message, name),
            "set",
            lambda t, v, o, i, _n=name: _on_set(t, v, o, i, name=_n),
            active_history=True,
        )
    event.listen(Message, "before_insert", _on_insert)
    event.listen(Session, "before_commit", _write_deltas)
    event.listen(Session, "after_transaction_end", _forget)
    _listening = True


_listening = False


# --- reading and rebuilding ---------------------------------------------------------------------
def count_rows(session: Session, org: str) -> list[tuple[CountKey, int]]:
    """The org's count rows (a few: one per label set and flags in use)."""
    rows = session.execute(
        select(
            MessageSetCount.label_set,
            MessageSetCount.archived,
            MessageSetCount.flagged,
            MessageSetCount.simulation,
            MessageSetCount.n,
        ).where(MessageSetCount.org == org, MessageSetCount.n != 0)
    )
    return [(CountKey(r.label_set, r.archived, r.flagged, r.simulation), r.n) for r in rows]


def counted_from_messages(session: Session, org: str) -> dict[CountKey, int]:
    """The org's counts as its messages say, read from scratch: on PostgreSQL by the database
    (a few rows come back), elsewhere by one pass here."""
    if session.get_bind().dialect.name == "postgresql":
        return _counted_by_postgres(session, org)
    labels: dict[str, set[str]] = {}
    for message_id, label_id in session.execute(
        select(MessageLabel.message_id, MessageLabel.label_id)
        .join(Message, Message.id == MessageLabel.message_id)
        .where(Message.org == org, Message.received_at.is_not(None))
    ):
        labels.setdefault(message_id, set()).add(label_id)
    counts: dict[CountKey, int] = {}
    for row in session.execute(
        select(Message.id, Message.archived, Message.flagged, Message.simulation).where(
            Message.org == org, Message.received_at.is_not(None)
        )
    ):
        key = CountKey(label_set(labels.get(row.id, ())), row.archived, row.flagged, row.simulation)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _counted_by_postgres(session: Session, org: str) -> dict[CountKey, int]:
    """Each message's label set by a join and a grouping (not a subquery per message, whose
    plan on tables without statistics yet, right after a bulk load, took minutes)."""
    label_set_column = func.coalesce(
        func.string_agg(
            MessageLabel.label_id,
            # byte order, as Python's sorted(): the set's string is its key
            aggregate_order_by(literal(LABEL_SET_SEPARATOR), MessageLabel.label_id.collate("C")),
        ),
        "",
    )
    per_message = (
        select(
            label_set_column.label("label_set"),
            Message.archived,
            Message.flagged,
            Message.simulation,
        )
        .select_from(Message)
        .outerjoin(MessageLabel, MessageLabel.message_id == Message.id)
        .where(Message.org == org, Message.received_at.is_not(None))
        .group_by(Message.id, Message.archived, Message.flagged, Message.simulation)
        .subquery()
    )
    columns = [per_message.c[name] for name in ("label_set", "archived", "flagged", "simulation")]
    rows = session.execute(select(*columns, func.count()).group_by(*columns))
    return {CountKey(*row[:4]): row[4] for row in rows}


def rebuild_counts(session: Session, org: str) -> int:
    """Recount the org's rows from its messages, in the caller's transaction; returns how many
    rows it has. Deleting a label calls it (every message of the label changes its set), and
    operators (``upartners cases rebuild-counts``).

    On PostgreSQL the table is locked against other writers first: a transaction that moved a
    count has committed before the messages are read, and one that has not yet moved it waits
    for this commit and then moves it from the state read here."""
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE message_set_counts IN SHARE ROW EXCLUSIVE MODE"))
    counts = counted_from_messages(session, org)
    session.execute(delete(MessageSetCount).where(MessageSetCount.org == org))
    apply_deltas(session, [(org, key, n) for key, n in counts.items()])
    tracked: _Tracked | None = session.info.get(_TRACKED)
    if tracked is not None:  # what they changed is in the rows now; later changes start anew
        for message_id in [m for m, e in tracked.touched.items() if e.message.org == org]:
            del tracked.touched[message_id]
        for message_id in [m for m, row in tracked.locked.items() if row.org == org]:
            del tracked.locked[message_id]
    return len(counts)


def rebuild_message_counts(store: ServiceStore, org: str | None = None) -> dict[str, int]:
    """Rebuild the counts of one org, or of every org (one transaction each): org -> rows."""
    with store.unit_of_work() as uow:
        orgs = [org] if org is not None else list(uow.session.scalars(select(Org.key)))
    done = {}
    for key in orgs:
        with store.unit_of_work() as uow:
            done[key] = rebuild_counts(uow.session, key)
            uow.commit()
    return done

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

The first time a unit of work touches a message, the key the message had is remembered
(``session.info``, dropped when the transaction ends); just before the commit each touched
message's key now is compared with it and the differences go out as one multi-row upsert in key
order: two transactions lock the rows they share in the same order (no deadlock), and hold the
locks only from that statement to the commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, event, inspect, select, text
from sqlalchemy.orm import Session, attributes, object_session

from services.cases.domain import CountKey, count_deltas, count_key, label_set, label_set_hash
from services.cases.handlers.cache import cache_of
from services.cases.models import Message, MessageLabel, MessageSetCount, Org
from shared.db import insert_statement
from shared.uow import ServiceStore

_COUNTED = ("received_at", "archived", "flagged", "simulation")
_TRACKED = "cases.counts"
_PRIMARY_KEY = ("org", "label_hash", "archived", "flagged", "simulation")


@dataclass
class _Touched:
    """One message this transaction changed: its key before (None: it was not counted, or did
    not exist), and its labels where a change of them said so."""

    message: Message
    before: CountKey | None
    before_known: bool  # False: ``before`` still needs the labels it had (never changed here)
    labels_before: frozenset[str] | None = None
    labels_now: frozenset[str] | None = None


@dataclass
class _Tracked:
    touched: dict[str, _Touched] = field(default_factory=dict)


def _tracked(session: Session) -> _Tracked:
    tracked = session.info.get(_TRACKED)
    if tracked is None:
        tracked = session.info[_TRACKED] = _Tracked()
    return tracked


def _forget(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_TRACKED, None)


def _state(message: Message, **overrides: Any) -> dict[str, Any]:
    values = {name: getattr(message, name) for name in _COUNTED}
    values.update(overrides)
    return values


def _key(values: dict[str, Any], labels: Iterable[str]) -> CountKey | None:
    return count_key(
        labels,
        received=values["received_at"] is not None,
        archived=bool(values["archived"]),
        flagged=bool(values["flagged"]),
        simulation=bool(values["simulation"]),
    )


def _touch(session: Session, message: Message, **before: Any) -> _Touched:
    """The message's entry, made on first touch with the state it had (``before`` names the
    attribute being set now, with its old value)."""
    tracked = _tracked(session)
    entry = tracked.touched.get(message.id)
    if entry is None:
        if inspect(message).persistent:
            values = _state(message, **before)
            # Labels are filled in at the commit if nothing here changes them.
            entry = _Touched(message, _key(values, ()), False)
            if entry.before is None:
                entry.before_known = True  # not counted: its labels do not matter
        else:  # inserted by this transaction
            entry = _Touched(message, None, True)
        tracked.touched[message.id] = entry
    return entry


def _on_set(target: Message, value: Any, old: Any, _initiator: Any, *, name: str) -> None:
    session = object_session(target)
    if session is None or value == old or target.id is None:
        return  # not in a session yet (being built), or unchanged
    if old in (attributes.NO_VALUE, attributes.NEVER_SET):
        old = None
    _touch(session, target, **{name: old})


def _on_insert(_mapper: Any, _connection: Any, target: Message) -> None:
    session = object_session(target)
    if session is not None:
        entry = _tracked(session).touched.get(target.id)
        if entry is None:
            _tracked(session).touched[target.id] = _Touched(target, None, True)
        else:  # touched while pending: it did not exist before
            entry.before, entry.before_known = None, True


for _name in _COUNTED:
    event.listen(
        getattr(Message, _name),
        "set",
        lambda t, v, o, i, _n=_name: _on_set(t, v, o, i, name=_n),
        active_history=True,
    )
event.listen(Message, "before_insert", _on_insert)


def labels_changed(session: Session, message: Message, before: set[str], now: set[str]) -> None:
    """``set_message_labels`` changed the message's labels from ``before`` to ``now``."""
    entry = _touch(session, message)
    if entry.labels_before is None:
        entry.labels_before = frozenset(before)
    entry.labels_now = frozenset(now)


# --- writing ------------------------------------------------------------------------------------
def _write_deltas(session: Session) -> None:
    """Before every commit of every session (a no-op where no message was touched)."""
    if any(isinstance(obj, Message) for obj in session.new):
        session.flush()  # inserted now, noticed now: not only by the commit's own flush
    tracked: _Tracked | None = session.info.get(_TRACKED)
    if tracked is None or not tracked.touched:
        return
    session.flush()  # every change is in the database, and the locks below are taken last
    entries = list(tracked.touched.values())
    _fill_labels(session, entries)
    moves: dict[str, list[tuple[CountKey | None, CountKey | None]]] = {}
    for entry in entries:
        message = entry.message
        after = _key(_state(message), entry.labels_now or ())
        moves.setdefault(message.org, []).append((entry.before, after))
    tracked.touched.clear()
    rows = [
        (org, key, n)
        for org, org_moves in moves.items()
        for key, n in count_deltas(org_moves).items()
    ]
    apply_deltas(session, rows)


def _fill_labels(session: Session, entries: list[_Touched]) -> None:
    """The labels of the touched messages whose labels this transaction did not change (one
    query at most: a worker's batch knows them already)."""
    known = cache_of(session).message_labels
    missing = []
    for entry in entries:
        if entry.labels_now is not None:
            continue
        message = entry.message
        needed = not entry.before_known or message.received_at is not None
        if not needed:
            continue
        if message.id in known:
            entry.labels_now = entry.labels_before = frozenset(known[message.id])
        else:
            missing.append(entry)
    if missing:
        found: dict[str, set[str]] = {entry.message.id: set() for entry in missing}
        for message_id, label_id in session.execute(
            select(MessageLabel.message_id, MessageLabel.label_id).where(
                MessageLabel.message_id.in_(found)
            )
        ):
            found[message_id].add(label_id)
        for entry in missing:
            entry.labels_now = entry.labels_before = frozenset(found[entry.message.id])
    for entry in entries:
        if not entry.before_known and entry.before is not None:
            entry.before = CountKey(
                label_set(entry.labels_before or ()),
                entry.before.archived,
                entry.before.flagged,
                entry.before.simulation,
            )
            entry.before_known = True


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
    statement = insert_statement(session, MessageSetCount).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=list(_PRIMARY_KEY),
            set_={"n": MessageSetCount.n + statement.excluded.n},
        )
    )


event.listen(Session, "before_commit", _write_deltas)
event.listen(Session, "after_transaction_end", _forget)


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
    """The org's counts as its messages say, read from scratch."""
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
    if tracked is not None:  # what they changed is in the rows now
        for message_id in [m for m, e in tracked.touched.items() if e.message.org == org]:
            del tracked.touched[message_id]
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

"""Statistics, stored: the facts of services/cases/stats.py written once each, and the daily
counts they add to, in the transaction of what they count (``uow.rows_to_write``: one INSERT of
the facts at commit, then one upsert of the counts the new ones add to, in key order).

Idempotent by construction: a fact is inserted with ``ON CONFLICT DO NOTHING ... RETURNING`` and
only the facts that were new add to the counts, so an event handled twice, or a rebuild run over
history, counts each fact once. A fact may also be withdrawn (a label taken off a message):
deleting it returns what it had added, which is taken off again.

Live counting and ``rebuild`` use the same functions of services/cases/stats.py over the same
information (what a case action's ``data`` says, the reply rows, the messages' labels), so a
rebuild gives exactly what was counted live.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Date, bindparam, delete, select, text, update
from sqlalchemy.orm import Session

from services.cases import stats
from services.cases.models import (
    Case,
    CaseAction,
    Label,
    Message,
    MessageLabel,
    Org,
    Outgoing,
    StatCount,
    StatFact,
)
from shared.db import JSONType, UTCDateTime, dialect_insert, dialect_name
from shared.uow import ServiceStore, UnitOfWork

_ADD, _REMOVE = "add", "remove"
CHUNK = 2_000  # rows per statement
# Facts a rebuild counts together: their counts are added up in memory first, so that a day's
# count row is written once per window rather than once per statement (the rebuild's counts
# upserts were most of its time). A window holds at most a few hundred thousand count keys.
REBUILD_WINDOW = 50_000
CASE_BATCH = 500  # cases a rebuild reads together (their ids in one IN list)
COUNTED_ACTIONS = ("open", "reassign", "reopen", "close", "note", "labels")


# --- writing -------------------------------------------------------------------------------------
def count(uow: UnitOfWork, org: Org, facts: Iterable[stats.Fact]) -> None:
    """Count these facts with this transaction (each once, ever)."""
    rows = uow.rows_to_write("stat_facts", _write)
    for fact in facts:
        rows[(org.key, fact.key)] = (_ADD, org.key, org.timezone, fact)


def withdraw(uow: UnitOfWork, org: Org, keys: Iterable[str]) -> None:
    """Take these facts back (if they were counted) with this transaction."""
    rows = uow.rows_to_write("stat_facts", _write)
    for key in keys:
        rows[(org.key, key)] = (_REMOVE, org.key, org.timezone, key)


def _write(session: Session, items: list[tuple[str, str, str, Any]]) -> None:
    """The last word on each fact in this transaction wins; the database says what changed."""
    totals: dict[tuple[Any, ...], list[float]] = {}
    added = [(org, tz, fact) for op, org, tz, fact in items if op == _ADD]
    removed = [(org, tz, key) for op, org, tz, key in items if op == _REMOVE]
    # One statement built once, its rows passed as parameters (SQLAlchemy sends them as
    # multi-row INSERTs): building ``.values([...])`` anew for every chunk cost more than the
    # database's work (bench/stats.py, rebuilding).
    statement = _facts_insert(dialect_name(session))
    for chunk in _chunks(added):
        rows = [_fact_row(org, fact) for org, _tz, fact in chunk]
        new = {(org, key) for org, key in session.execute(statement, rows)}
        for org, tz, fact in chunk:
            if (org, fact.key) in new:
                _add_up(totals, org, tz, fact, 1)
    for org, tz, key in removed:
        gone = session.execute(
            delete(StatFact).where(StatFact.org == org, StatFact.key == key).returning(StatFact)
        ).scalar_one_or_none()
        if gone is not None:
            _add_up(totals, org, tz, _fact_of(gone), -1)
    _upsert_counts(session, totals)


def _add_up(totals: dict, org: str, timezone: str, fact: stats.Fact, sign: int) -> None:
    for inc in stats.increments(fact, timezone):
        total = totals.setdefault((org, inc.scope, inc.scope_id, inc.day, inc.metric), [0, 0.0])
        total[0] += sign * inc.n
        total[1] += sign * inc.seconds


def _upsert_counts(session: Session, totals: dict[tuple[Any, ...], list[float]]) -> None:
    """One upsert in key order (the table's): two transactions lock shared rows in the same
    order."""
    rows = [
        {
            "org": org,
            "day": day,
            "scope": scope,
            "scope_id": scope_id,
            "metric": metric,
            "n": int(n),
            "seconds": seconds,
        }
        for (org, scope, scope_id, day, metric), (n, seconds) in sorted(totals.items())
        if n or seconds
    ]
    if not rows:
        return
    statement = _counts_upsert(dialect_name(session))
    for chunk in _chunks(rows):
        session.execute(statement, chunk)


@functools.cache
def _facts_insert(dialect: str) -> Any:
    """Built once per dialect (shared.db.dialect_insert): its compiled form is then cached."""
    return (
        dialect_insert(dialect)(StatFact.__table__)
        .on_conflict_do_nothing(index_elements=["org", "key"])
        .returning(StatFact.org, StatFact.key)
    )


@functools.cache
def _counts_upsert(dialect: str) -> Any:
    """Built once per dialect: building it (its ``excluded`` above all) cost 1 ms a batch."""
    table = StatCount.__table__
    statement = dialect_insert(dialect)(table)
    return statement.on_conflict_do_update(
        index_elements=["org", "scope", "scope_id", "day", "metric"],
        set_={
            "n": table.c.n + statement.excluded.n,
            "seconds": table.c.seconds + statement.excluded.seconds,
        },
    )


def _fact_row(org: str, fact: stats.Fact) -> dict[str, Any]:
    return {
        "org": org,
        "key": fact.key,
        "metric": fact.metric,
        "at": fact.at,
        "seconds": fact.seconds,
        "partner_id": fact.partner,
        "user_id": fact.user,
        "labels": list(fact.labels),
        "org_wide": fact.org_wide,
    }


def _fact_of(row: StatFact) -> stats.Fact:
    return stats.Fact(
        row.key,
        row.metric,
        row.at,
        row.seconds,
        row.partner_id,
        row.user_id,
        tuple(row.labels),
        row.org_wide,
    )


def _chunks(rows: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


# --- what the handlers tell ----------------------------------------------------------------------
def message_received(uow: UnitOfWork, org: Org, message: Message, labels: Iterable[str]) -> None:
    """A message's first receipt: it counts for the org, and for the labels it carries."""
    if message.simulation or message.received_at is None:
        return
    received = message.received_at
    count(uow, org, [stats.incoming(message.id, received)])
    count(uow, org, [stats.labelled(message.id, label, received) for label in labels])


def message_labels_changed(
    uow: UnitOfWork, org: Org, message: Message, before: set[str], after: set[str]
) -> None:
    """A received message counts for the labels it carries now, not for those taken off."""
    if message.simulation or message.received_at is None:
        return
    received = message.received_at
    count(uow, org, [stats.labelled(message.id, label, received) for label in after - before])
    withdraw(
        uow, org, [stats.labelled(message.id, label, received).key for label in before - after]
    )


def label_deleted(session: Session, org: str, label_id: str) -> None:
    """A deleted label's counts go with it (its messages and cases lose it too)."""
    session.execute(
        delete(StatCount).where(
            StatCount.org == org, StatCount.scope == stats.LABEL, StatCount.scope_id == label_id
        )
    )
    session.execute(
        delete(StatFact).where(
            StatFact.org == org,
            StatFact.metric == stats.INCOMING,
            StatFact.key.like(f"in:%:{label_id}"),
        )
    )


def replied(uow: UnitOfWork, org: Org, outgoing: Outgoing, case: Case | None) -> None:
    """A reply a user wrote; in a case, it may be the first the case's clock waits for."""
    facts = [stats.reply(outgoing.id, outgoing.created_at, outgoing.partner_id, outgoing.user_id)]
    if case is not None:
        clock = stats.CaseClock.from_json(case.stats_clock)
        facts += stats.case_replied(
            clock, outgoing.id, outgoing.created_at, outgoing.partner_id, outgoing.user_id
        )
        case.stats_clock = clock.to_json()
    count(uow, org, facts)


def case_acted(
    uow: UnitOfWork, org: Org, case: Case, action: CaseAction, labels: Iterable[str] = ()
) -> None:
    """An open, reassign, note, reopen or close of the case (``labels``: the case's, for a
    close): its clock may move, facts may follow."""
    clock = stats.CaseClock.from_json(case.stats_clock)
    if action.kind == "open":
        labels = _labels_of(action)
    facts = _case_facts(clock, action, case.partner_id, sorted(labels))
    case.stats_clock = clock.to_json()
    count(uow, org, facts)


def _labels_of(action: CaseAction) -> list[str]:
    return list(action.data.get("labels", []))


def _case_facts(
    clock: stats.CaseClock, action: CaseAction, partner: str, labels: list[str]
) -> list[stats.Fact]:
    """The one reading of a case action for statistics, live and when rebuilding. ``partner``:
    the assignee when the action happened; ``labels``: the case's labels then."""
    data, at = action.data, action.created_at
    assigned = (data.get("partner") or {}).get("id") or partner
    self_assigned = bool(data.get("self_assigned"))
    if action.kind == "open":
        return stats.case_opened(
            clock, action.id, at, assigned, action.user_id, self_assigned, labels
        )
    if action.kind == "reassign":
        return stats.case_reassigned(clock, action.id, at, assigned, action.user_id, self_assigned)
    if action.kind == "note":
        return stats.case_noted(action.id, at, partner, action.user_id)
    if action.kind == "reopen":
        return stats.case_reopened(clock, action.id, at, partner)
    if action.kind == "close":
        return stats.case_closed(clock, action.id, at, partner, action.user_id, labels)
    return []


# --- rebuilding ----------------------------------------------------------------------------------
def rebuild(store: ServiceStore, org_key: str | None = None) -> dict[str, int]:
    """Recount an org's statistics (or every org's) from its history: messages and their
    labels, replies, case actions. Facts are written as they are read, a chunk at a time.
    Returns how many facts each org has now."""
    done: dict[str, int] = {}
    with store.unit_of_work() as uow:
        keys = [org_key] if org_key else list(uow.session.scalars(select(Org.key)))
    for key in keys:
        with store.unit_of_work() as uow:
            session = uow.session
            org = session.get(Org, key)
            if org is None:
                continue
            session.execute(delete(StatCount).where(StatCount.org == key))
            session.execute(delete(StatFact).where(StatFact.org == key))
            written, window = 0, []
            for fact in _history_facts(session, org):
                window.append(fact)
                if len(window) == REBUILD_WINDOW:
                    _write_rebuilt(session, org, window)
                    written, window = written + len(window), []
            _write_rebuilt(session, org, window)
            uow.commit()
            done[key] = written + len(window)
    return done


# The rebuild's statements, sent as plain executemany (psycopg pipelines them): SQLAlchemy's
# multi-row INSERT of 2,000 rows is a 100 KB statement that psycopg parses again each time,
# which cost the rebuild a third of its time (bench/stats.py).
_INSERT_FACT = text(
    "INSERT INTO stat_facts (org, key, metric, at, seconds, partner_id, user_id, labels, "
    "org_wide) VALUES (:org, :key, :metric, :at, :seconds, :partner_id, :user_id, :labels, "
    ":org_wide)"
).bindparams(bindparam("at", type_=UTCDateTime()), bindparam("labels", type_=JSONType))
_ADD_COUNT = text(
    "INSERT INTO stat_counts (org, scope, scope_id, day, metric, n, seconds) VALUES (:org, "
    ":scope, :scope_id, :day, :metric, :n, :seconds) ON CONFLICT (org, scope, scope_id, day, "
    "metric) DO UPDATE SET n = stat_counts.n + excluded.n, "
    "seconds = stat_counts.seconds + excluded.seconds"
).bindparams(bindparam("day", type_=Date()))


_SET_CLOCK = (
    update(Case.__table__)
    .where(Case.__table__.c.id == bindparam("case_id"))
    .values(stats_clock=bindparam("clock", type_=JSONType))
)


def _write_rebuilt(session: Session, org: Org, facts: list[stats.Fact]) -> None:
    """A window of a rebuild's facts and what they add to the counts. The org's facts were
    deleted first and history yields each fact once, so every one is new (the test that live
    counting equals a rebuild would catch a fact yielded twice)."""
    if not facts:
        return
    session.execute(_INSERT_FACT, [_fact_row(org.key, fact) for fact in facts])
    totals: dict[tuple[Any, ...], list[float]] = {}
    for fact in facts:
        _add_up(totals, org.key, org.timezone, fact, 1)
    session.execute(
        _ADD_COUNT,
        [
            {
                "org": key[0],
                "scope": key[1],
                "scope_id": key[2],
                "day": key[3],
                "metric": key[4],
                "n": int(n),
                "seconds": seconds,
            }
            for key, (n, seconds) in sorted(totals.items())
        ],
    )


def _history_facts(session: Session, org: Org) -> Iterable[stats.Fact]:
    """Messages (streamed in time order with their labels: a window of facts then falls on few
    days), then replies and cases."""
    rows = session.execute(
        select(Message.id, Message.received_at, MessageLabel.label_id)
        .outerjoin(MessageLabel, MessageLabel.message_id == Message.id)
        .where(
            Message.org == org.key, Message.received_at.is_not(None), Message.simulation.is_(False)
        )
        .order_by(Message.received_at, Message.id)
        .execution_options(yield_per=CHUNK)
    )
    previous = None
    for message_id, received, label_id in rows:
        if message_id != previous:
            yield stats.incoming(message_id, received)
            previous = message_id
        if label_id is not None:
            yield stats.labelled(message_id, label_id, received)
    live = set(
        session.scalars(select(Label.id).where(Label.org == org.key, Label.deleted_at.is_(None)))
    )
    yield from _case_history(session, org, live)


def _case_history(session: Session, org: Org, live: set[str]) -> Iterable[stats.Fact]:
    """Every reply, then the cases a batch at a time: each case's actions and replies in the
    order they happened, through the case's clock (which is stored again on the case). Rows
    are read as columns and one batch of cases is held at a time: a year of 100,000 cases
    held as objects took 1.4 GB (bench/import.py)."""
    replies = session.execute(
        select(Outgoing.id, Outgoing.created_at, Outgoing.partner_id, Outgoing.user_id)
        .where(Outgoing.org == org.key)
        .execution_options(yield_per=CHUNK)
    )
    for reply in replies:
        yield stats.reply(reply.id, reply.created_at, reply.partner_id, reply.user_id)
    after = ""
    while True:
        cases = session.execute(
            select(Case.id, Case.partner_id)
            .where(Case.org == org.key, Case.id > after)
            .order_by(Case.id)
            .limit(CASE_BATCH)
        ).all()
        if not cases:
            return
        after = cases[-1].id
        ids = [case.id for case in cases]
        events: dict[str, list[tuple[datetime, int, str, Any]]] = defaultdict(list)
        for action in session.execute(
            select(
                CaseAction.id,
                CaseAction.case_id,
                CaseAction.kind,
                CaseAction.user_id,
                CaseAction.data,
                CaseAction.created_at,
            ).where(CaseAction.case_id.in_(ids), CaseAction.kind.in_(COUNTED_ACTIONS))
        ):
            events[action.case_id].append((action.created_at, 0, action.id, action))
        for reply in session.execute(
            select(
                Outgoing.id,
                Outgoing.case_id,
                Outgoing.created_at,
                Outgoing.partner_id,
                Outgoing.user_id,
            ).where(Outgoing.case_id.in_(ids))
        ):
            events[reply.case_id].append((reply.created_at, 1, reply.id, reply))
        clocks = []
        for case in cases:
            clock, partner, labels = stats.CaseClock(), case.partner_id, set()
            for _at, rank, _id, item in sorted(events[case.id], key=lambda e: e[:3]):
                if rank == 1:  # a reply
                    yield from stats.case_replied(
                        clock, item.id, item.created_at, item.partner_id, item.user_id
                    )
                elif item.kind == "labels":
                    labels |= set(item.data.get("added", []))
                    labels -= set(item.data.get("removed", []))
                else:
                    if item.kind == "open":
                        labels = set(_labels_of(item))
                    assigned = (item.data.get("partner") or {}).get("id")
                    partner = assigned if item.kind in ("open", "reassign") else partner
                    yield from _case_facts(clock, item, partner, sorted(labels & live))
            clocks.append({"case_id": case.id, "clock": clock.to_json()})
        session.execute(_SET_CLOCK, clocks)

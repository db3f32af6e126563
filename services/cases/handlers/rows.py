"""Rows that many capabilities read: the org (created on first sight), a case's state and its
open case per contact, the labels of a message or case, people and label references, the
newest-first keyset pages, and the unique-constraint check at flush."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.cases.domain import (
    CaseState,
    Conflict,
    decode_cursor,
    encode_cursor,
)
from services.cases.handlers.cache import cache_of
from services.cases.handlers.counts import labels_changed
from services.cases.models import (
    Case,
    CaseLabel,
    Label,
    Message,
    MessageLabel,
    Org,
    Partner,
    User,
)
from services.cases.views import Ref
from shared import auth
from shared.db import insert_statement, utcnow


def ensure_org(session: Session, key: str) -> Org:
    """The org; events of an org nobody set up yet create it with defaults (adopted later by
    ``bootstrap_org``), so that nothing they carry is lost."""
    known = cache_of(session).orgs
    org = known.get(key) or session.get(Org, key)
    if org is None:
        session.execute(
            insert_statement(session, Org)
            .values(
                key=key,
                name=key,
                timezone="UTC",
                suspend_groups=[],
                followup_every_close=False,
                interrupt_on_open=False,
                mirror_labels=False,
                mirror_archive=False,
                warning_days=7,
                must_use_answers=False,
                pseudonym_salt=auth.new_secret(),
                org_version=0,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        org = session.get(Org, key)
    known[key] = org  # type: ignore[assignment]
    return org  # type: ignore[return-value]


def flush_unique(session: Session, code: str, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(code, message) from exc


def existing_labels(session: Session, org: str, label_ids: set[str]) -> set[str]:
    """Those of the labels that exist (not deleted); the org's labels are read once per unit of
    work."""
    if not label_ids:
        return set()
    return label_ids & live_labels(session, org)


def live_labels(session: Session, org: str) -> set[str]:
    live = cache_of(session).live_labels
    if org not in live:
        live[org] = set(
            session.scalars(select(Label.id).where(Label.org == org, Label.deleted_at.is_(None)))
        )
    return live[org]


def message_label_ids(session: Session, message_id: str) -> set[str]:
    return set(
        session.scalars(select(MessageLabel.label_id).where(MessageLabel.message_id == message_id))
    )


def known_message_labels(session: Session, message_id: str) -> set[str]:
    """The message's labels, read once per unit of work (``set_message_labels`` keeps them)."""
    known = cache_of(session).message_labels
    if message_id not in known:
        known[message_id] = message_label_ids(session, message_id)
    return set(known[message_id])


def set_message_labels(
    session: Session, message: Message, current: set[str], label_ids: set[str]
) -> None:
    """Make the message's labels ``label_ids``; ``current`` are the ones it has now. The one
    way a message's labels change (deleting a label aside): the folder counts follow here."""
    if label_ids == current:
        return
    labels_changed(session, message, current, label_ids)
    if removed := current - label_ids:
        session.execute(
            delete(MessageLabel).where(
                MessageLabel.message_id == message.id, MessageLabel.label_id.in_(removed)
            )
        )
    session.add_all(
        MessageLabel(message_id=message.id, label_id=lid) for lid in label_ids - current
    )
    cache_of(session).message_labels[message.id] = set(label_ids)


def user_refs(session: Session, user_ids: Iterable[str | None]) -> dict[str, Ref]:
    wanted = {u for u in user_ids if u}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.name).where(User.id.in_(wanted)))
    return {row.id: Ref(row.id, row.name) for row in rows}


def label_refs(session: Session, label_ids: Iterable[str]) -> dict[str, Ref]:
    wanted = set(label_ids)
    if not wanted:
        return {}
    rows = session.execute(select(Label.id, Label.name).where(Label.id.in_(wanted)))
    return {row.id: Ref(row.id, row.name) for row in rows}


def case_state(case: Case) -> CaseState:
    return CaseState.OPEN if case.closed_on is None else CaseState.CLOSED


def known_open_case(session: Session, contact_id: str) -> Case | None:
    """The contact's open case, from what ``prepare_message_events`` read if it did."""
    known = cache_of(session)
    if contact_id in known.open_cases_read:
        return known.open_cases.get(contact_id)
    return open_case_of(session, contact_id)


def open_case_of(session: Session, contact_id: str) -> Case | None:
    return session.scalar(
        select(Case).where(Case.contact_id == contact_id, Case.closed_on.is_(None))
    )


def case_label_ids(session: Session, case_id: str) -> set[str]:
    return set(session.scalars(select(CaseLabel.label_id).where(CaseLabel.case_id == case_id)))


def person_ref(row: Partner | User | None) -> dict[str, str] | None:
    return {"id": row.id, "name": row.name} if row is not None else None


def newest_first(
    session: Session,
    model: Any,
    at: Any,
    conditions: list[Any],
    cursor: str | None,
    limit: int,
) -> tuple[list[Any], str | None]:
    """One page of ``model`` rows, newest first, keyset-paged on (``at``, id); with the cursor
    of the next page, or None on the last one."""
    if cursor:
        last_at, last_id = decode_cursor(cursor, datetime, str)
        conditions = [*conditions, or_(at < last_at, and_(at == last_at, model.id < last_id))]
    rows = session.scalars(
        select(model).where(*conditions).order_by(at.desc(), model.id.desc()).limit(limit + 1)
    ).all()
    page = list(rows[:limit])
    more = len(rows) > limit
    return page, encode_cursor(getattr(page[-1], at.key), page[-1].id) if more else None

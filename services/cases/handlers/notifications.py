"""Watchers and notifications: who is told what about a case, only ever while they may read it;
the reader's list, and marking notifications read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.orm import Session

from services.cases.domain import (
    Access,
    Actor,
    NotFound,
    case_access,
)
from services.cases.handlers.access import actors_of, case_visibility
from services.cases.handlers.rows import case_label_ids, newest_first, user_refs
from services.cases.models import (
    Case,
    CaseWatcher,
    Notification,
    User,
)
from services.cases.views import NotificationView, Page
from shared.db import insert_statement, new_id, utcnow
from shared.uow import ServiceStore


def watchers(session: Session, case_id: str) -> list[str]:
    return list(session.scalars(select(CaseWatcher.user_id).where(CaseWatcher.case_id == case_id)))


def watch(session: Session, case_id: str, user_ids: Iterable[str | None]) -> None:
    for user_id in {u for u in user_ids if u}:
        session.execute(
            insert_statement(session, CaseWatcher)
            .values(case_id=case_id, user_id=user_id)
            .on_conflict_do_nothing(index_elements=["case_id", "user_id"])
        )


def _readers(session: Session, case: Case, user_ids: Iterable[str]) -> list[str]:
    """Those of ``user_ids`` who may read the case now (active, and with access by the same
    rule as GET /cases/<id>). A watcher who lost access (the case went to another partner, or
    lost the label their partner sees) stops watching: they would be told of a case they cannot
    open, with the names of another partner's people."""
    wanted = list(dict.fromkeys(user_ids))
    if not wanted:
        return []
    users = session.scalars(select(User).where(User.id.in_(wanted), User.org == case.org)).all()
    actors = actors_of(session, users)
    active = {u.id for u in users if u.active}
    labels = case_label_ids(session, case.id)
    readers, lost = [], []
    for user_id in wanted:
        actor = actors.get(user_id)
        if actor is None or case_access(actor, case.partner_id, labels) is Access.NONE:
            lost.append(user_id)
        elif user_id in active:
            readers.append(user_id)
    if lost:
        session.execute(
            delete(CaseWatcher).where(CaseWatcher.case_id == case.id, CaseWatcher.user_id.in_(lost))
        )
    return readers


def drop_watchers_without_access(session: Session, case: Case) -> None:
    """After a reassignment or a change of labels: who can no longer read the case stops
    watching it."""
    _readers(session, case, watchers(session, case.id))


def notify(
    session: Session, case: Case, kind: str, actor_id: str | None, user_ids: Iterable[str]
) -> None:
    """Tell these users (never the one who acted) what happened, if they may read the case."""
    now = utcnow()
    for user_id in _readers(session, case, (u for u in user_ids if u != actor_id)):
        session.add(
            Notification(
                id=new_id(),
                user_id=user_id,
                case_id=case.id,
                kind=kind,
                actor_id=actor_id,
                created_at=now,
            )
        )


def _notification_visibility(actor: Actor) -> Any:
    """A notification about a case shows only while its reader may read the case (checked again
    on every read: access can be lost after the notification was written); one about an export
    is its requester's own."""
    return or_(
        Notification.case_id.is_(None),
        exists().where(Case.id == Notification.case_id, case_visibility(actor)),
    )


def notify_export_ready(session: Session, user_id: str, export_id: str) -> None:
    """Tell the requester their export can be downloaded."""
    session.add(
        Notification(
            id=new_id(),
            user_id=user_id,
            export_id=export_id,
            kind="export_ready",
            created_at=utcnow(),
        )
    )


def list_notifications(
    store: ServiceStore,
    actor: Actor,
    *,
    unread: bool = False,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    with store.unit_of_work() as uow:
        session = uow.session
        conditions = [Notification.user_id == actor.user_id, _notification_visibility(actor)]
        if unread:
            conditions.append(Notification.read_at.is_(None))
        page, next_cursor = newest_first(
            session, Notification, Notification.created_at, conditions, cursor, limit
        )
        people = user_refs(session, {n.actor_id for n in page})
        items = [
            NotificationView(
                n.id,
                n.kind,
                n.case_id,
                n.export_id,
                people.get(n.actor_id or ""),
                n.created_at,
                n.read_at is not None,
            )
            for n in page
        ]
        return Page(items, next_cursor)


def mark_notification_read(
    store: ServiceStore, actor: Actor, notification_id: str
) -> NotificationView:
    with store.unit_of_work() as uow:
        session = uow.session
        notification = session.scalar(
            select(Notification).where(
                Notification.id == notification_id,
                Notification.user_id == actor.user_id,
                _notification_visibility(actor),
            )
        )
        if notification is None:
            raise NotFound("notification")
        if notification.read_at is None:
            notification.read_at = utcnow()
            uow.commit()
        by = user_refs(session, [notification.actor_id]).get(notification.actor_id or "")
        return NotificationView(
            notification.id,
            notification.kind,
            notification.case_id,
            notification.export_id,
            by,
            notification.created_at,
            True,
        )


def mark_all_notifications_read(store: ServiceStore, actor: Actor) -> int:
    with store.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(Notification).where(
                Notification.user_id == actor.user_id,
                Notification.read_at.is_(None),
                _notification_visibility(actor),
            )
        ).all()
        now = utcnow()
        for row in rows:
            row.read_at = now
        uow.commit()
        return len(rows)


def unread_count(store: ServiceStore, actor: Actor, *, cap: int = 99) -> int:
    """How many of the reader's notifications are unread (counted up to ``cap``: the top bar
    shows "99+" beyond it, and the count stays cheap)."""
    with store.unit_of_work() as uow:
        unread = (
            select(Notification.id)
            .where(
                Notification.user_id == actor.user_id,
                Notification.read_at.is_(None),
                _notification_visibility(actor),
            )
            .limit(cap + 1)
            .subquery()
        )
        return uow.session.scalar(select(func.count()).select_from(unread)) or 0

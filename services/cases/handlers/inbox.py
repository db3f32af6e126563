"""The inbox: folders, filters and counts, one message and its history, the actions on one or
many messages (label, flag, archive, restore), and the soft lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

import services.cases.handlers.statistics as statistics
from services.cases.domain import (
    LOCK_DURATION,
    Actor,
    Conflict,
    Invalid,
    folder_counts,
    lock_holder,
    may_lock,
    restore_allowed,
)
from services.cases.handlers.access import (
    contact_id_of,
    load_message,
    message_visibility,
    require_admin,
)
from services.cases.handlers.changes import mirror_archive
from services.cases.handlers.contacts import contact_view
from services.cases.handlers.counts import count_rows, lock_messages
from services.cases.handlers.labels import load_label
from services.cases.handlers.replies import outgoing_views
from services.cases.handlers.rows import (
    case_state,
    ensure_org,
    label_refs,
    message_label_ids,
    newest_first,
    set_message_labels,
    user_refs,
)
from services.cases.models import (
    Case,
    Contact,
    Label,
    Message,
    MessageAction,
    MessageLabel,
    Org,
    Outgoing,
    User,
)
from services.cases.views import Counts, HistoryEntry, LockView, MessageView, Page, Ref
from shared import events as ev
from shared.db import new_id, utcnow
from shared.uow import ServiceStore


def list_messages(
    store: ServiceStore,
    actor: Actor,
    *,
    folder: str = "inbox",
    label: str | None = None,
    contact: str | None = None,
    text: str | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
    simulation: bool = False,
) -> Page:
    """One page of a folder, newest first, with the filters applied."""
    if folder == "sent":
        return _list_sent(
            store,
            actor,
            contact=contact,
            text=text,
            after=after,
            before=before,
            cursor=cursor,
            limit=limit,
        )
    with store.unit_of_work() as uow:
        session = uow.session
        conditions = message_conditions(
            session,
            actor,
            folder=folder,
            label=label,
            contact=contact,
            text=text,
            after=after,
            before=before,
            simulation=simulation,
        )
        if conditions is None:
            return Page([])
        page, next_cursor = newest_first(
            session, Message, Message.received_at, conditions, cursor, limit
        )
        org = ensure_org(session, actor.org)
        items = _message_views(session, actor, org, page)
        return Page(items, next_cursor)


def message_conditions(
    session: Session,
    actor: Actor,
    *,
    folder: str = "inbox",
    label: str | None = None,
    contact: str | None = None,
    text: str | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
    simulation: bool = False,
) -> list[Any] | None:
    """The conditions on ``Message`` of a folder (not sent) with its filters, as the actor may
    see it; None when nothing can match (a label the actor does not see). The inbox pages and
    the messages export (handlers/export_kinds.py) read the same rows with them."""
    if folder == "unlabelled":
        require_admin(actor)
    conditions = [
        Message.org == actor.org,
        Message.received_at.is_not(None),
        _folder_condition(actor, folder),
    ]
    if not simulation:
        conditions.append(Message.simulation.is_(False))
    if label is not None:
        if not actor.sees_label(label):
            return None
        conditions.append(
            exists().where(MessageLabel.message_id == Message.id, MessageLabel.label_id == label)
        )
    conditions += _common_filters(
        session, actor, Message, Message.received_at, contact, text, after, before
    )
    return conditions


def _folder_condition(actor: Actor, folder: str) -> Any:
    visible = message_visibility(actor)
    if folder == "inbox":
        has_label = exists().where(MessageLabel.message_id == Message.id)
        return and_(Message.archived.is_(False), has_label if actor.is_admin else visible)
    if folder == "flagged":
        return and_(Message.flagged.is_(True), visible)
    if folder == "archived":
        return and_(Message.archived.is_(True), visible)
    if folder == "unlabelled":
        return and_(
            Message.archived.is_(False), ~exists().where(MessageLabel.message_id == Message.id)
        )
    raise ValueError(f"unknown folder {folder!r}")


def _common_filters(session, actor, model, timestamp, contact, text, after, before) -> list[Any]:
    """The filters incoming and sent messages share: contact, text, time range."""
    conditions: list[Any] = []
    if contact is not None:
        conditions.append(model.contact_id == contact_id_of(session, actor, contact))
    if text:
        conditions.append(model.text.icontains(text, autoescape=True))
    if after is not None:
        conditions.append(timestamp > after)
    if before is not None:
        conditions.append(timestamp < before)
    return conditions


def sent_conditions(session, actor, *, contact=None, text=None, after=None, before=None):
    """The conditions on ``Outgoing`` of the sent folder with its filters, as the actor may see
    it (the replies export reads the same rows)."""
    conditions = [Outgoing.org == actor.org]
    if not actor.is_admin:
        conditions.append(Outgoing.partner_id == actor.partner_id)
    return conditions + _common_filters(
        session, actor, Outgoing, Outgoing.created_at, contact, text, after, before
    )


def _list_sent(store, actor, *, contact, text, after, before, cursor, limit) -> Page:
    with store.unit_of_work() as uow:
        session = uow.session
        conditions = sent_conditions(
            session, actor, contact=contact, text=text, after=after, before=before
        )
        page, next_cursor = newest_first(
            session, Outgoing, Outgoing.created_at, conditions, cursor, limit
        )
        org = ensure_org(session, actor.org)
        items = outgoing_views(session, org, page)
        return Page(items, next_cursor)


def message_counts(store: ServiceStore, actor: Actor, *, simulation: bool = False) -> Counts:
    """How many messages each folder holds, and how many inbox messages carry each label: sums
    over the org's few count rows (kept as messages change, handlers/counts.py), never a pass
    over its messages; and the replies sent, counted on their index."""
    with store.unit_of_work() as uow:
        session = uow.session
        folders, labels = folder_counts(
            actor, count_rows(session, actor.org), simulation=simulation
        )
        sent = select(func.count()).select_from(Outgoing).where(Outgoing.org == actor.org)
        if not actor.is_admin:
            sent = sent.where(Outgoing.partner_id == actor.partner_id)
        folders["sent"] = session.scalar(sent) or 0
        return Counts(folders, labels)


def get_message(store: ServiceStore, actor: Actor, message_id: str) -> MessageView:
    with store.unit_of_work() as uow:
        session = uow.session
        message = load_message(session, actor, message_id)
        return _message_views(session, actor, ensure_org(session, actor.org), [message])[0]


def message_history(store: ServiceStore, actor: Actor, message_id: str) -> list[HistoryEntry]:
    with store.unit_of_work() as uow:
        session = uow.session
        message = load_message(session, actor, message_id)
        rows = session.scalars(
            select(MessageAction)
            .where(MessageAction.message_id == message.id)
            .order_by(MessageAction.created_at, MessageAction.id)
        ).all()
        people = user_refs(session, {r.user_id for r in rows})
        labels = label_refs(session, {r.label_id for r in rows if r.label_id})
        return [
            HistoryEntry(
                r.action,
                people.get(r.user_id) if r.user_id else None,
                labels.get(r.label_id) if r.label_id else None,
                r.case_id,
                r.created_at,
            )
            for r in rows
            if r.label_id is None or actor.sees_label(r.label_id)
        ]


def act_on_messages(
    store: ServiceStore,
    actor: Actor,
    message_ids: Sequence[str],
    action: str,
    label_id: str | None = None,
) -> list[MessageView]:
    """Label, unlabel, flag, unflag, archive or restore messages, all or none: one message the
    actor may not see makes the whole request a 404 that says nothing about which."""
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        messages = [load_message(session, actor, mid) for mid in dict.fromkeys(message_ids)]
        lock_messages(session, [m.id for m in messages])  # decide on what they are now
        if action in ("label", "unlabel"):
            if label_id is None:
                raise Invalid({"label": ["A label is required for this action."]})
            load_label(session, actor, label_id)
        changed: list[Message] = []
        for message in messages:
            if _apply_message_action(session, message, action, label_id):
                changed.append(message)
                session.add(
                    MessageAction(
                        id=new_id(),
                        message_id=message.id,
                        user_id=actor.user_id,
                        action=action,
                        label_id=label_id if action in ("label", "unlabel") else None,
                    )
                )
        if action in ("label", "unlabel") and label_id is not None:
            now_has = {label_id} if action == "label" else set()
            for message in changed:
                statistics.message_labels_changed(uow, org, message, {label_id} - now_has, now_has)
        if action == "archive":
            mirror_archive(uow, org, ev.MESSAGE_ARCHIVED, changed)
        elif action == "restore":
            mirror_archive(uow, org, ev.MESSAGE_RESTORED, changed)
        uow.commit()
        return _message_views(session, actor, org, messages)


def _apply_message_action(
    session: Session, message: Message, action: str, label_id: str | None
) -> bool:
    """Do one action to one message; False when it was already so."""
    if action in ("label", "unlabel"):
        assert label_id is not None
        current = message_label_ids(session, message.id)
        wanted = current | {label_id} if action == "label" else current - {label_id}
        set_message_labels(session, message, current, wanted)
        return wanted != current
    if action == "restore" and message.archived and message.case_id is not None:
        case = session.get(Case, message.case_id)
        state = case_state(case) if case is not None else None
        if not restore_allowed(state):
            raise Conflict("MESSAGE_IN_CASE", "This message belongs to an open case.")
    attribute, value = {
        "flag": ("flagged", True),
        "unflag": ("flagged", False),
        "archive": ("archived", True),
        "restore": ("archived", False),
    }[action]
    if getattr(message, attribute) == value:
        return False
    setattr(message, attribute, value)
    return True


def lock_message(store: ServiceStore, actor: Actor, message_id: str) -> MessageView:
    """Take (or extend) the soft lock that tells colleagues someone is answering."""
    with store.unit_of_work() as uow:
        session = uow.session
        message = load_message(session, actor, message_id)
        now = utcnow()
        if not may_lock(actor.user_id, message.locked_by, message.locked_until, now):
            holder = session.get(User, message.locked_by)
            raise Conflict(
                "MESSAGE_LOCKED",
                f"{holder.name if holder else 'Someone'} is answering this message.",
            )
        message.locked_by, message.locked_until = actor.user_id, now + LOCK_DURATION
        uow.commit()
        return _message_views(session, actor, ensure_org(session, actor.org), [message])[0]


def unlock_message(store: ServiceStore, actor: Actor, message_id: str) -> MessageView:
    with store.unit_of_work() as uow:
        session = uow.session
        message = load_message(session, actor, message_id)
        if lock_holder(message.locked_by, message.locked_until, utcnow()) == actor.user_id:
            message.locked_by = message.locked_until = None
            uow.commit()
        return _message_views(session, actor, ensure_org(session, actor.org), [message])[0]


def _message_views(
    session: Session, actor: Actor, org: Org, messages: Sequence[Message]
) -> list[MessageView]:
    if not messages:
        return []
    ids = [m.id for m in messages]
    contacts = {
        c.id: c
        for c in session.scalars(
            select(Contact).where(Contact.id.in_({m.contact_id for m in messages}))
        )
    }
    labels: dict[str, list[Ref]] = {mid: [] for mid in ids}
    for row in session.execute(
        select(MessageLabel.message_id, Label.id, Label.name)
        .join(Label, Label.id == MessageLabel.label_id)
        .where(MessageLabel.message_id.in_(ids))
        .order_by(Label.name)
    ):
        if actor.sees_label(row.id):
            labels[row.message_id].append(Ref(row.id, row.name))
    now = utcnow()
    holders = {m.id: lock_holder(m.locked_by, m.locked_until, now) for m in messages}
    people = user_refs(session, {h for h in holders.values() if h})
    return [
        MessageView(
            id=m.id,
            contact=contact_view(contacts[m.contact_id], org),
            text=m.text,
            attachments=list(m.attachments),
            received_at=m.received_at,  # type: ignore[arg-type]
            labels=labels[m.id],
            labelled=m.labelled,
            flagged=m.flagged,
            archived=m.archived,
            simulation=m.simulation,
            case=m.case_id,
            lock=(
                LockView(people[holders[m.id]], m.locked_until)  # type: ignore[arg-type]
                if holders[m.id] in people
                else None
            ),
        )
        for m in messages
    ]

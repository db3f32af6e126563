"""Working a case: open (once per contact), note, reassign, labels, reply, close, reopen, watch.
Each command asks the domain what happens (services/cases/domain.py) and applies it with
``apply_case_change``, which bumps the case's version and emits its event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import services.cases.handlers.statistics as statistics
from services.cases import domain
from services.cases.domain import (
    Access,
    Actor,
    Conflict,
    Invalid,
    NotFound,
    case_access,
)
from services.cases.handlers.access import load_case, load_message, message_visibility
from services.cases.handlers.answers import reply_answer
from services.cases.handlers.case_reads import case_views
from services.cases.handlers.changes import apply_case_change
from services.cases.handlers.counts import lock_messages
from services.cases.handlers.labels import known_labels
from services.cases.handlers.notifications import (
    drop_watchers_without_access,
    notify,
    watch,
    watchers,
)
from services.cases.handlers.replies import outgoing_views, send
from services.cases.handlers.rows import (
    case_label_ids,
    case_state,
    ensure_org,
    message_label_ids,
    open_case_of,
    person_ref,
)
from services.cases.models import (
    Case,
    CaseAction,
    CaseLabel,
    CaseWatcher,
    Contact,
    Message,
    MessageAction,
    Org,
    Partner,
    User,
)
from services.cases.views import CaseView, OutgoingView
from shared.db import new_id, utcnow
from shared.uow import ServiceStore


def _assignees(
    session: Session, actor: Actor, partner_id: str, user_id: str | None
) -> tuple[Partner, User | None]:
    partner = session.get(Partner, partner_id)
    if partner is None or partner.org != actor.org:
        raise Invalid({"partner": ["Unknown partner."]})
    user = None
    if user_id is not None:
        user = session.get(User, user_id)
        # One answer for "no such user" and "someone else's user": GET /users/<id> answers 404
        # for both, so this must not tell them apart either.
        if (
            user is None
            or user.org != actor.org
            or not user.active
            or user.partner_id != partner.id
        ):
            raise Invalid({"user": ["No active user of the assignee partner has this id."]})
    return partner, user


def open_case(
    store: ServiceStore,
    actor: Actor,
    *,
    summary: str,
    partner: str,
    user: str | None = None,
    message: str | None = None,
    contact: str | None = None,
    reply: str | None = None,
    answer: str | None = None,
) -> tuple[CaseView, bool]:
    """Open a case on the contact of a message (or of a contact reference).

    Returns (case, created). A contact has at most one open case: if one is open already, or
    another request opens one at the same moment (the partial unique index decides), the
    caller gets that case and ``created`` is False.
    """
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        source, person = _case_contact(session, actor, message, contact)
        if reply:  # a first message is a reply like any other: the org may require an answer
            answer = reply_answer(session, actor, org, answer)
        assignee, assignee_user = _assignees(session, actor, partner, user)
        existing = open_case_of(session, person.id)
        if existing is not None:
            return _existing_case(session, actor, org, existing)
        now = utcnow()
        case = Case(
            id=new_id(),
            org=org.key,
            contact_id=person.id,
            summary=summary,
            partner_id=assignee.id,
            user_id=assignee_user.id if assignee_user else None,
            opened_by=actor.user_id,
            initial_message_id=source.id if source else None,
            case_version=0,
        )
        opened = domain.open_case(now)
        for name, value in opened.sets.items():  # before the flush: it inserts the whole row
            setattr(case, name, value)
        session.add(case)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()  # someone opened one a moment ago: answer with theirs
            existing = open_case_of(session, person.id)
            if existing is None:
                raise
            return _existing_case(session, actor, org, existing)
        archived = _attach_messages(session, actor, case, source)
        inherited = message_label_ids(session, source.id) if source is not None else set()
        session.add_all(CaseLabel(case_id=case.id, label_id=lid) for lid in inherited)
        action = _record_action(
            session,
            case,
            "open",
            actor,
            at=now,
            note=summary,
            data={**_assignment(actor, assignee, assignee_user), "labels": sorted(inherited)},
        )
        statistics.case_acted(uow, org, case, action)
        watch(session, case.id, {actor.user_id, case.user_id})
        if assignee_user is not None and assignee_user.id != actor.user_id:
            notify(session, case, "assigned", actor.user_id, [assignee_user.id])
        apply_case_change(
            uow,
            session,
            case,
            opened,
            assignee_partner=person_ref(assignee),
            assignee_user=person_ref(assignee_user),
            archived_external_ids=[m.external_id for m in archived if m.external_id]
            if org.mirror_archive
            else [],
        )
        if reply:
            send(
                uow,
                actor,
                org,
                person,
                reply,
                case=case,
                reply_to=source.id if source else None,
                answer=answer,
            )
        uow.commit()
        return case_views(session, actor, org, [case])[0], True


def _existing_case(session: Session, actor: Actor, org: Org, case: Case) -> tuple[CaseView, bool]:
    if case_access(actor, case.partner_id, case_label_ids(session, case.id)) is Access.NONE:
        raise Conflict("CONTACT_HAS_OPEN_CASE", "This contact already has an open case.")
    return case_views(session, actor, org, [case])[0], False


def _case_contact(
    session: Session, actor: Actor, message_id: str | None, ref: str | None
) -> tuple[Message | None, Contact]:
    if message_id is not None:
        message = load_message(session, actor, message_id)
        return message, session.get(Contact, message.contact_id)  # type: ignore[return-value]
    assert ref is not None
    contact = session.scalar(
        select(Contact).where(Contact.org == actor.org, Contact.ref == ref.upper())
    )
    if contact is None:
        raise NotFound("contact")
    if not actor.is_admin:
        seen = session.scalar(
            select(Message.id)
            .where(
                Message.contact_id == contact.id,
                Message.received_at.is_not(None),
                message_visibility(actor),
            )
            .limit(1)
        )
        if seen is None:
            raise NotFound("contact")
    return None, contact


def _attach_messages(
    session: Session, actor: Actor, case: Case, source: Message | None
) -> list[Message]:
    """The source message and the contact's later ones not in a case go into the case,
    archived. Returns those this archived."""
    if source is None:
        return []
    messages = session.scalars(
        select(Message).where(
            Message.contact_id == case.contact_id,
            Message.case_id.is_(None),
            Message.received_at >= source.received_at,
        )
    ).all()
    lock_messages(session, [m.id for m in messages])  # decide on what they are now
    archived = []
    for message in messages:
        message.case_id = case.id
        message.locked_by = message.locked_until = None
        if not message.archived:
            message.archived = True
            archived.append(message)
            session.add(
                MessageAction(
                    id=new_id(),
                    message_id=message.id,
                    user_id=actor.user_id,
                    action="archive",
                    case_id=case.id,
                )
            )
    return archived


def _assignment(actor: Actor, partner: Partner, user: User | None) -> dict[str, Any]:
    """Who a case goes to, and whether the partner gave it to itself (statistics measure no
    first reply for that)."""
    return {
        "partner": person_ref(partner),
        "user": person_ref(user),
        "self_assigned": actor.partner_id == partner.id,
    }


def add_note(store: ServiceStore, actor: Actor, case_id: str, note: str) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        noted = domain.add_note(case_state(case))
        action = _record_action(session, case, "note", actor, at=utcnow(), note=note)
        statistics.case_acted(uow, ensure_org(session, actor.org), case, action)
        apply_case_change(uow, session, case, noted, note_id=action.id)
        notify(session, case, "note", actor.user_id, watchers(session, case.id))
        uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def reassign_case(
    store: ServiceStore,
    actor: Actor,
    case_id: str,
    *,
    partner: str | None = None,
    user: str | None = None,
) -> CaseView:
    """Give the case to another partner and/or user (a new partner without a user unassigns
    the user)."""
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        domain.check_state(case_state(case), "reassign")  # before looking up the assignees
        new_partner, new_user = _assignees(session, actor, partner or case.partner_id, user)
        change = domain.reassign(
            case_state(case),
            (case.partner_id, case.user_id),
            (new_partner.id, new_user.id if new_user else None),
        )
        if change is not None:
            action = _record_action(
                session,
                case,
                "reassign",
                actor,
                at=utcnow(),
                data=_assignment(actor, new_partner, new_user),
            )
            statistics.case_acted(uow, ensure_org(session, actor.org), case, action)
            apply_case_change(
                uow,
                session,
                case,
                change,
                assignee_partner=person_ref(new_partner),
                assignee_user=person_ref(new_user),
            )
            drop_watchers_without_access(session, case)
            if new_user is not None:
                watch(session, case.id, [new_user.id])
                notify(session, case, "assigned", actor.user_id, [new_user.id])
            uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def set_case_labels(
    store: ServiceStore, actor: Actor, case_id: str, label_ids: Sequence[str]
) -> CaseView:
    """Set the case's labels among those the actor sees; labels it does not see stay."""
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        domain.check_state(case_state(case), "label")  # before looking up the labels
        known_labels(session, actor, label_ids, "labels")
        current = case_label_ids(session, case.id)
        hidden = {lid for lid in current if not actor.sees_label(lid)}
        wanted = hidden | set(label_ids)
        change = domain.relabel(case_state(case), current, wanted)
        if change is not None:
            added, removed = wanted - current, current - wanted
            if removed:
                session.execute(
                    delete(CaseLabel).where(
                        CaseLabel.case_id == case.id, CaseLabel.label_id.in_(removed)
                    )
                )
            session.add_all(CaseLabel(case_id=case.id, label_id=lid) for lid in added)
            _record_action(
                session,
                case,
                "labels",
                actor,
                at=utcnow(),
                data={"added": sorted(added), "removed": sorted(removed)},
            )
            apply_case_change(uow, session, case, change)
            drop_watchers_without_access(session, case)
            uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def set_case_summary(store: ServiceStore, actor: Actor, case_id: str, summary: str) -> CaseView:
    """Rewrite an open case's summary; the timeline keeps the one it replaced."""
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        change = domain.resummarise(case_state(case), case.summary, summary)
        if change is not None:
            _record_action(session, case, "summary", actor, at=utcnow(), note=case.summary)
            apply_case_change(uow, session, case, change)
            uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def reply_in_case(
    store: ServiceStore, actor: Actor, case_id: str, text: str, answer: str | None = None
) -> OutgoingView:
    """Message the contact of an open case; ``answer``: the ready-made answer the text started
    from (the org may require one)."""
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        domain.check_state(case_state(case), "reply")  # changes nothing of the case itself
        answer = reply_answer(session, actor, org, answer)
        contact = session.get(Contact, case.contact_id)
        assert contact is not None
        latest = session.scalar(
            select(Message.id)
            .where(Message.case_id == case.id, Message.received_at.is_not(None))
            .order_by(Message.received_at.desc())
            .limit(1)
        )
        outgoing = send(uow, actor, org, contact, text, case=case, reply_to=latest, answer=answer)
        notify(session, case, "reply", actor.user_id, watchers(session, case.id))
        uow.commit()
        return outgoing_views(session, org, [outgoing])[0]


def _record_action(
    session: Session,
    case: Case,
    kind: str,
    actor: Actor,
    *,
    at: datetime,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> CaseAction:
    """One line of the case's timeline, written by a user."""
    action = CaseAction(
        id=new_id(),
        case_id=case.id,
        kind=kind,
        user_id=actor.user_id,
        note=note,
        data=data or {},
        created_at=at,
    )
    session.add(action)
    return action


def _assignee_refs(session: Session, case: Case) -> dict[str, Any]:
    """The assignee fields of case events, as people references."""
    partner = session.get(Partner, case.partner_id)
    user = session.get(User, case.user_id) if case.user_id else None
    return {"assignee_partner": person_ref(partner), "assignee_user": person_ref(user)}


def close_case(store: ServiceStore, actor: Actor, case_id: str, note: str) -> CaseView:
    """Close with a final note; case.closed says whether this is the first close (the org may
    start its follow-up flow only then)."""
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        now = utcnow()
        closed = domain.close_case(case_state(case), case.close_count, now)
        action = _record_action(session, case, "close", actor, at=now, note=note)
        labels = case_label_ids(session, case.id)
        statistics.case_acted(uow, ensure_org(session, actor.org), case, action, labels)
        apply_case_change(
            uow,
            session,
            case,
            closed,
            **_assignee_refs(session, case),
            opened_on=(case.reopened_on or case.opened_on).isoformat(),
        )
        notify(session, case, "closed", actor.user_id, watchers(session, case.id))
        uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def reopen_case(
    store: ServiceStore, actor: Actor, case_id: str, note: str | None = None
) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id, Access.UPDATE)
        now = utcnow()
        reopened = domain.reopen_case(case_state(case), now)
        if open_case_of(session, case.contact_id) is not None:
            raise Conflict("CONTACT_HAS_OPEN_CASE", "This contact has another open case.")
        apply_case_change(uow, session, case, reopened, **_assignee_refs(session, case))
        try:
            session.flush()  # the partial unique index: one open case per contact
        except IntegrityError as exc:
            raise Conflict("CONTACT_HAS_OPEN_CASE", "This contact has another open case.") from exc
        action = _record_action(session, case, "reopen", actor, at=now, note=note)
        statistics.case_acted(uow, ensure_org(session, actor.org), case, action)
        watch(session, case.id, [actor.user_id])
        notify(session, case, "reopened", actor.user_id, watchers(session, case.id))
        uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def watch_case(store: ServiceStore, actor: Actor, case_id: str, watching: bool) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id)
        if watching:
            watch(session, case.id, [actor.user_id])
        else:
            session.execute(
                delete(CaseWatcher).where(
                    CaseWatcher.case_id == case.id, CaseWatcher.user_id == actor.user_id
                )
            )
        uow.commit()
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]

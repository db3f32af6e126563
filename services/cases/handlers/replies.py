"""Answering a contact, from the inbox or inside a case: the reply is stored, the source
message archived, outgoing.requested emitted; and replies as the API shows them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

import services.cases.handlers.statistics as statistics
from services.cases.domain import (
    Access,
    Actor,
    CaseState,
)
from services.cases.handlers.access import load_case, load_message
from services.cases.handlers.answers import reply_answer
from services.cases.handlers.changes import mirror_archive
from services.cases.handlers.contacts import contact_view
from services.cases.handlers.counts import lock_messages
from services.cases.handlers.rows import case_state, ensure_org, user_refs
from services.cases.models import (
    Case,
    Contact,
    MessageAction,
    Org,
    Outgoing,
)
from services.cases.views import OutgoingView
from shared import events as ev
from shared.db import new_id, utcnow
from shared.uow import ServiceStore, UnitOfWork


def reply_to_message(
    store: ServiceStore, actor: Actor, message_id: str, text: str, answer: str | None = None
) -> OutgoingView:
    """Send one message to the contact; the message answered is archived and unlocked.
    ``answer``: the ready-made answer the text started from (the org may require one)."""
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        message = load_message(session, actor, message_id)
        lock_messages(session, [message.id])  # decide on what it is now
        answer = reply_answer(session, actor, org, answer)
        contact = session.get(Contact, message.contact_id)
        assert contact is not None
        case = session.get(Case, message.case_id) if message.case_id else None
        if case is not None and case_state(case) is not CaseState.OPEN:
            case = None  # a reply to an old case's message goes out on its own
        if case is not None:
            load_case(session, actor, case.id, Access.UPDATE)  # it goes into the case
        outgoing = send(
            uow, actor, org, contact, text, case=case, reply_to=message.id, answer=answer
        )
        session.add(
            MessageAction(
                id=new_id(),
                message_id=message.id,
                user_id=actor.user_id,
                action="reply",
                outgoing_id=outgoing.id,
            )
        )
        if not message.archived:
            message.archived = True
            session.add(
                MessageAction(
                    id=new_id(), message_id=message.id, user_id=actor.user_id, action="archive"
                )
            )
            mirror_archive(uow, org, ev.MESSAGE_ARCHIVED, [message])
        message.locked_by = message.locked_until = None
        uow.commit()
        return outgoing_views(session, org, [outgoing])[0]


def send(
    uow: UnitOfWork,
    actor: Actor,
    org: Org,
    contact: Contact,
    text: str,
    *,
    case: Case | None,
    reply_to: str | None,
    answer: str | None = None,
) -> Outgoing:
    outgoing = Outgoing(
        id=new_id(),
        org=org.key,
        contact_id=contact.id,
        case_id=case.id if case else None,
        reply_to=reply_to,
        partner_id=actor.partner_id,
        user_id=actor.user_id,
        text=text,
        answer_id=answer,
        delivery="pending",
        created_at=utcnow(),
    )
    uow.session.add(outgoing)
    statistics.replied(uow, org, outgoing, case)
    uow.emit(
        ev.OUTGOING_REQUESTED,
        org=org.key,
        data={
            "outgoing_id": outgoing.id,
            "contact_uuid": contact.uuid,
            "text": text,
            "case_id": outgoing.case_id,
            "reply_to": reply_to,
        },
    )
    return outgoing


def outgoing_views(session: Session, org: Org, rows: Sequence[Outgoing]) -> list[OutgoingView]:
    contacts = {
        c.id: c
        for c in session.scalars(
            select(Contact).where(Contact.id.in_({o.contact_id for o in rows}))
        )
    }
    people = user_refs(session, {o.user_id for o in rows})
    return [
        OutgoingView(
            id=o.id,
            contact=contact_view(contacts[o.contact_id], org),
            text=o.text,
            case=o.case_id,
            reply_to=o.reply_to,
            by=people.get(o.user_id),
            delivery=o.delivery,
            failure=o.failure,
            sent_on=o.sent_on,
            created_at=o.created_at,
        )
        for o in rows
    ]

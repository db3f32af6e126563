"""Who is calling and what they may see: bearer tokens to an ``Actor``, and the SQL twins of the
visibility rules of services/cases/domain.py for messages and cases. Loading through these is
how every command answers 404 for what the caller may not see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, false, or_, select, true
from sqlalchemy.orm import Session

from services.cases.domain import (
    Access,
    Actor,
    Forbidden,
    NotFound,
    can_see_message,
    case_access,
)
from services.cases.handlers.rows import case_label_ids, message_label_ids
from services.cases.models import (
    Case,
    CaseLabel,
    Contact,
    Message,
    MessageLabel,
    Partner,
    PartnerLabel,
    Token,
    User,
)
from shared import auth
from shared.uow import ServiceStore


def authenticate(store: ServiceStore, token: str) -> Actor | None:
    """The active user holding this unrevoked token, or None."""
    with store.unit_of_work() as uow:
        session = uow.session
        user = session.scalar(
            select(User)
            .join(Token, Token.user_id == User.id)
            .where(
                Token.token_hash == auth.hash_secret(token),
                Token.revoked_at.is_(None),
                User.active.is_(True),
            )
        )
        if user is None:
            return None
        return actors_of(session, [user])[user.id]


def actors_of(session: Session, users: Sequence[User]) -> dict[str, Actor]:
    """Each user as the visibility rules see them: role, partner, and a restricted partner's
    labels. Three queries at most, however many users."""
    partner_ids = {u.partner_id for u in users if u.partner_id is not None}
    restricted: set[str] = set()
    labels: dict[str, set[str]] = {}
    if partner_ids:
        restricted = set(
            session.scalars(
                select(Partner.id).where(Partner.id.in_(partner_ids), Partner.restricted)
            )
        )
    if restricted:
        rows = session.execute(
            select(PartnerLabel.partner_id, PartnerLabel.label_id).where(
                PartnerLabel.partner_id.in_(restricted)
            )
        )
        for partner_id, label_id in rows:
            labels.setdefault(partner_id, set()).add(label_id)
    return {
        user.id: Actor(
            org=user.org,
            user_id=user.id,
            name=user.name,
            role=user.role,
            partner_id=user.partner_id,
            restricted=user.partner_id in restricted,
            partner_labels=frozenset(labels.get(user.partner_id or "", ())),
        )
        for user in users
    }


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("Only an org administrator can do this.")


def message_visibility(actor: Actor) -> Any:
    """SQL twin of domain.can_see_message for listing: by labels."""
    labelled = exists().where(MessageLabel.message_id == Message.id)
    if actor.is_admin:
        return true()
    if actor.restricted:
        if not actor.partner_labels:
            return false()
        labelled = labelled.where(MessageLabel.label_id.in_(actor.partner_labels))
    return labelled


def load_message(session: Session, actor: Actor, message_id: str) -> Message:
    message = session.get(Message, message_id)
    if message is None or message.org != actor.org or message.received_at is None:
        raise NotFound("message")
    access = Access.NONE
    if message.case_id is not None:
        case = session.get(Case, message.case_id)
        if case is not None:
            access = case_access(actor, case.partner_id, case_label_ids(session, case.id))
    if not can_see_message(actor, message_label_ids(session, message.id), access):
        raise NotFound("message")
    return message


def contact_id_of(session: Session, actor: Actor, ref: str) -> str:
    # An unknown reference matches nothing, like a known one with no visible message.
    contact_id = session.scalar(
        select(Contact.id).where(Contact.org == actor.org, Contact.ref == ref.upper())
    )
    return contact_id or ""


def load_case(
    session: Session, actor: Actor, case_id: str, needed: Access = Access.READ
) -> tuple[Case, Access]:
    case = session.get(Case, case_id)
    if case is None or case.org != actor.org:
        raise NotFound("case")
    access = case_access(actor, case.partner_id, case_label_ids(session, case.id))
    if access is Access.NONE:
        raise NotFound("case")
    if access < needed:
        raise Forbidden("Only the assigned partner can change this case.")
    return case, access


def case_visibility(actor: Actor) -> Any:
    """SQL twin of domain.case_access > NONE."""
    if actor.is_admin:
        return true()
    labelled = exists().where(CaseLabel.case_id == Case.id)
    if actor.restricted:
        if not actor.partner_labels:
            return Case.partner_id == actor.partner_id
        labelled = labelled.where(CaseLabel.label_id.in_(actor.partner_labels))
    return or_(Case.partner_id == actor.partner_id, labelled)

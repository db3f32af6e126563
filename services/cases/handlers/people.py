"""Partners (restricted to labels or not), users with their roles, and their API tokens; who
may see and manage whom is in services/cases/domain.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from services.cases.domain import (
    ADMINISTRATOR,
    MANAGER,
    Actor,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    can_manage_user,
    can_see_user,
)
from services.cases.handlers.access import require_admin
from services.cases.handlers.labels import known_labels
from services.cases.handlers.rows import ensure_org, flush_unique
from services.cases.models import (
    Label,
    Partner,
    PartnerLabel,
    Token,
    User,
)
from services.cases.views import MeView, NewToken, OrgRef, PartnerView, Ref, TokenView, UserView
from shared import auth
from shared.db import new_id, utcnow
from shared.uow import ServiceStore


def new_token(session: Session, user_id: str, description: str) -> NewToken:
    secret = auth.new_secret()
    row = Token(
        id=new_id(),
        user_id=user_id,
        token_hash=auth.hash_secret(secret),
        description=description,
        created_at=utcnow(),
    )
    session.add(row)
    return NewToken(row.id, secret, description, row.created_at)


def _partner_view(session: Session, partner: Partner) -> PartnerView:
    labels = session.execute(
        select(Label.id, Label.name)
        .join(PartnerLabel, PartnerLabel.label_id == Label.id)
        .where(PartnerLabel.partner_id == partner.id)
        .order_by(Label.name)
    ).all()
    return PartnerView(
        partner.id,
        partner.name,
        partner.description,
        partner.restricted,
        [Ref(row.id, row.name) for row in labels] if partner.restricted else [],
    )


def partner_refs(store: ServiceStore, actor: Actor) -> list[Ref]:
    """The org's partners by id and name, in one query (a directory: anyone of the org)."""
    with store.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Partner.id, Partner.name).where(Partner.org == actor.org).order_by(Partner.name)
        )
        return [Ref(partner_id, name) for partner_id, name in rows]


def list_partners(store: ServiceStore, actor: Actor) -> list[PartnerView | Ref]:
    """Administrators get every partner in full; partners' users get their own in full and a
    directory entry (id and name) of the others, to reassign cases to them."""
    with store.unit_of_work() as uow:
        partners = uow.session.scalars(
            select(Partner).where(Partner.org == actor.org).order_by(Partner.name)
        ).all()
        return [
            _partner_view(uow.session, p)
            if actor.is_admin or p.id == actor.partner_id
            else Ref(p.id, p.name)
            for p in partners
        ]


def _load_partner(session: Session, actor: Actor, partner_id: str) -> Partner:
    partner = session.get(Partner, partner_id)
    if partner is None or partner.org != actor.org:
        raise NotFound("partner")
    if not actor.is_admin and partner.id != actor.partner_id:
        raise NotFound("partner")
    return partner


def get_partner(store: ServiceStore, actor: Actor, partner_id: str) -> PartnerView:
    with store.unit_of_work() as uow:
        return _partner_view(uow.session, _load_partner(uow.session, actor, partner_id))


def create_partner(store: ServiceStore, actor: Actor, values: dict[str, Any]) -> PartnerView:
    require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        ensure_org(session, actor.org)
        partner = Partner(
            id=new_id(),
            org=actor.org,
            name=values["name"],
            description=values.get("description", ""),
            restricted=values.get("restricted", False),
        )
        session.add(partner)
        flush_unique(session, "PARTNER_NAME_TAKEN", "A partner of this org has that name.")
        _set_partner_labels(session, actor, partner, values.get("labels", []))
        uow.commit()
        return _partner_view(session, partner)


def update_partner(
    store: ServiceStore, actor: Actor, partner_id: str, changes: dict[str, Any]
) -> PartnerView:
    with store.unit_of_work() as uow:
        session = uow.session
        partner = _load_partner(session, actor, partner_id)
        require_admin(actor)
        for key in ("name", "description", "restricted"):
            if key in changes:
                setattr(partner, key, changes[key])
        flush_unique(session, "PARTNER_NAME_TAKEN", "A partner of this org has that name.")
        if "labels" in changes:
            _set_partner_labels(session, actor, partner, changes["labels"])
        uow.commit()
        return _partner_view(session, partner)


def _set_partner_labels(
    session: Session, actor: Actor, partner: Partner, label_ids: Sequence[str]
) -> None:
    known_labels(session, actor, label_ids, "labels")
    session.execute(delete(PartnerLabel).where(PartnerLabel.partner_id == partner.id))
    session.add_all(PartnerLabel(partner_id=partner.id, label_id=lid) for lid in set(label_ids))


def _user_view(session: Session, user: User) -> UserView:
    partner = session.get(Partner, user.partner_id) if user.partner_id else None
    return UserView(
        user.id,
        user.name,
        user.email,
        user.role,
        Ref(partner.id, partner.name) if partner else None,
        user.active,
    )


def whoami(store: ServiceStore, actor: Actor) -> MeView:
    with store.unit_of_work() as uow:
        session = uow.session
        user = session.get(User, actor.user_id)
        org = ensure_org(session, actor.org)
        assert user is not None
        return MeView(
            _user_view(session, user),
            OrgRef(org.key, org.name),
            actor.restricted,
            sorted(actor.partner_labels),
        )


def load_user(session: Session, actor: Actor, user_id: str) -> User:
    user = session.get(User, user_id)
    if user is None or user.org != actor.org:
        raise NotFound("user")
    if not can_see_user(actor, user.id, user.partner_id):
        raise NotFound("user")
    return user


def list_users(store: ServiceStore, actor: Actor, partner_id: str | None = None) -> list[UserView]:
    with store.unit_of_work() as uow:
        query = select(User).where(User.org == actor.org).order_by(User.name, User.id)
        if not actor.is_admin:
            query = query.where(or_(User.partner_id == actor.partner_id, User.id == actor.user_id))
        if partner_id is not None:
            query = query.where(User.partner_id == partner_id)
        return [_user_view(uow.session, u) for u in uow.session.scalars(query)]


def get_user(store: ServiceStore, actor: Actor, user_id: str) -> UserView:
    with store.unit_of_work() as uow:
        return _user_view(uow.session, load_user(uow.session, actor, user_id))


def create_user(store: ServiceStore, actor: Actor, values: dict[str, Any]) -> UserView:
    """Administrators add anyone; partner managers add managers and agents to their partner."""
    role = values["role"]
    partner_id = values.get("partner")
    if actor.role == MANAGER and partner_id is None:
        partner_id = actor.partner_id
    with store.unit_of_work() as uow:
        session = uow.session
        if not can_manage_user(actor, partner_id, role):
            raise Forbidden("Your role cannot add this user.")
        _check_role_partner(session, actor, role, partner_id)
        user = User(
            id=new_id(),
            org=actor.org,
            partner_id=partner_id,
            role=role,
            name=values["name"],
            email=values["email"].lower(),
        )
        session.add(user)
        flush_unique(session, "EMAIL_TAKEN", "A user of this org has that email.")
        uow.commit()
        return _user_view(session, user)


def _check_role_partner(session: Session, actor: Actor, role: str, partner_id: str | None) -> None:
    if role == ADMINISTRATOR and partner_id is not None:
        raise Invalid({"partner": ["An administrator belongs to no partner."]})
    if role != ADMINISTRATOR:
        if partner_id is None:
            raise Invalid({"partner": ["Managers and agents belong to a partner."]})
        partner = session.get(Partner, partner_id)
        if partner is None or partner.org != actor.org:
            raise Invalid({"partner": ["Unknown partner."]})


def update_user(
    store: ServiceStore, actor: Actor, user_id: str, changes: dict[str, Any]
) -> UserView:
    with store.unit_of_work() as uow:
        session = uow.session
        user = load_user(session, actor, user_id)
        role = changes.get("role", user.role)
        partner_id = changes.get("partner", user.partner_id)
        if user.id == actor.user_id and set(changes) <= {"name"}:
            pass  # everyone may rename themselves
        elif not (
            can_manage_user(actor, user.partner_id, user.role)
            and can_manage_user(actor, partner_id, role)
        ):
            raise Forbidden("Your role cannot change this user.")
        moved = role != user.role or partner_id != user.partner_id
        if user.id == actor.user_id and (changes.get("active") is False or moved):
            raise Conflict("CANNOT_CHANGE_SELF", "You cannot deactivate, demote or move yourself.")
        if moved:
            _check_role_partner(session, actor, role, partner_id)
        if changes.get("active") is False and user.active:
            user.session_epoch += 1  # a deactivated user's web sessions end at once
        for key in ("name", "role", "active"):
            if key in changes:
                setattr(user, key, changes[key])
        user.partner_id = partner_id
        uow.commit()
        return _user_view(session, user)


def _load_managed_user(session: Session, actor: Actor, user_id: str) -> User:
    user = load_user(session, actor, user_id)
    if user.id != actor.user_id and not can_manage_user(actor, user.partner_id, user.role):
        raise Forbidden("Your role cannot manage this user's tokens.")
    return user


def list_tokens(store: ServiceStore, actor: Actor, user_id: str) -> list[TokenView]:
    with store.unit_of_work() as uow:
        user = _load_managed_user(uow.session, actor, user_id)
        rows = uow.session.scalars(
            select(Token).where(Token.user_id == user.id).order_by(Token.created_at)
        )
        return [TokenView(t.id, t.description, t.created_at, t.revoked_at) for t in rows]


def create_token(store: ServiceStore, actor: Actor, user_id: str, description: str) -> NewToken:
    with store.unit_of_work() as uow:
        user = _load_managed_user(uow.session, actor, user_id)
        token = new_token(uow.session, user.id, description)
        uow.commit()
    return token


def revoke_token(store: ServiceStore, actor: Actor, user_id: str, token_id: str) -> TokenView:
    with store.unit_of_work() as uow:
        user = _load_managed_user(uow.session, actor, user_id)
        token = uow.session.get(Token, token_id)
        if token is None or token.user_id != user.id:
            raise NotFound("token")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            uow.commit()
        return TokenView(token.id, token.description, token.created_at, token.revoked_at)

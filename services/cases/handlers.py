"""The cases service layer: one function per command of the partner API (and the CLI) and one
per consumed event.

Commands take the store and the authenticated ``Actor``; they load only what the actor may see
(anything else is ``NotFound``, never told apart from a missing object), change state, emit the
events the change causes and commit once. Event handlers take the unit of work the dispatcher
opened (its inbox row makes them idempotent) and the envelope. Answers are partner-safe views:
a contact is only ever its pseudonymous reference and the one field the org chose to show.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, false, func, or_, select, true
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.cases.domain import (
    ADMINISTRATOR,
    LOCK_DURATION,
    LONG_REF_LENGTH,
    MANAGER,
    Access,
    Actor,
    CaseState,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    can_manage_user,
    can_see_message,
    can_see_user,
    case_access,
    decode_cursor,
    display_value,
    encode_cursor,
    is_first_close,
    lock_holder,
    may_lock,
    merge_labeler_labels,
    needs_warning,
    next_state,
    pseudonym,
    restore_allowed,
)
from services.cases.models import (
    Case,
    CaseAction,
    CaseLabel,
    CaseWatcher,
    Catalog,
    Contact,
    Label,
    Message,
    MessageAction,
    MessageLabel,
    Notification,
    Org,
    Outgoing,
    Partner,
    PartnerLabel,
    Token,
    User,
)
from shared import auth
from shared import events as ev
from shared.db import insert_statement, new_id, utcnow
from shared.events import Envelope
from shared.rules import RuleError, describe_rule, parse_rule, rule_to_json
from shared.uow import ServiceStore, UnitOfWork

log = logging.getLogger(__name__)

ORG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# --- views: what the API shows ------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    id: str
    name: str


@dataclass(frozen=True)
class CatalogRef:
    uuid: str
    name: str | None


@dataclass(frozen=True)
class ContactView:
    ref: str
    display: str | None  # the org's chosen contact field; None when the org chose none


@dataclass(frozen=True)
class OrgView:
    key: str
    name: str
    timezone: str
    suspend_groups: list[CatalogRef]
    followup_flow: CatalogRef | None
    followup_every_close: bool
    interrupt_on_open: bool
    mirror_labels: bool
    mirror_archive: bool
    display_field: str | None
    warning_days: int | None
    org_version: int


@dataclass(frozen=True)
class CatalogView:
    groups: list[dict[str, Any]]
    flows: list[dict[str, Any]]
    synced_on: datetime | None


@dataclass(frozen=True)
class PartnerView:
    id: str
    name: str
    description: str
    restricted: bool
    labels: list[Ref]


@dataclass(frozen=True)
class UserView:
    id: str
    name: str
    email: str
    role: str
    partner: Ref | None
    active: bool


@dataclass(frozen=True)
class MeView:
    user: UserView
    org: OrgRef
    restricted: bool
    labels: list[str]  # the labels a restricted partner sees


@dataclass(frozen=True)
class OrgRef:
    key: str
    name: str


@dataclass(frozen=True)
class TokenView:
    id: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewToken:
    """The only answer that ever carries a token."""

    id: str
    token: str
    description: str
    created_at: datetime


@dataclass(frozen=True)
class LabelView:
    id: str
    name: str
    description: str
    synced: bool
    active: bool
    rule: list[dict[str, Any]]
    rule_description: str
    label_version: int


@dataclass(frozen=True)
class LockView:
    locked_by: Ref
    until: datetime


@dataclass(frozen=True)
class MessageView:
    id: str
    contact: ContactView
    text: str | None
    attachments: list[dict[str, Any]]
    received_at: datetime
    labels: list[Ref]
    labelled: bool
    flagged: bool
    archived: bool
    simulation: bool
    case: str | None
    lock: LockView | None


@dataclass(frozen=True)
class OutgoingView:
    id: str
    contact: ContactView
    text: str
    case: str | None
    reply_to: str | None
    by: Ref | None
    delivery: str
    failure: str | None
    sent_on: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    action: str
    by: Ref | None
    label: Ref | None
    case: str | None
    at: datetime


@dataclass(frozen=True)
class CaseView:
    id: str
    contact: ContactView
    summary: str
    state: str
    assignee_partner: Ref
    assignee_user: Ref | None
    labels: list[Ref]
    opened_by: Ref | None
    opened_on: datetime
    reopened_on: datetime | None
    closed_on: datetime | None
    initial_message: str | None
    case_version: int
    warning: bool
    watching: bool
    access: str


@dataclass(frozen=True)
class TimelineEntry:
    type: str  # incoming, outgoing, action
    id: str
    at: datetime
    text: str | None = None
    attachments: list[dict[str, Any]] | None = None
    by: Ref | None = None
    delivery: str | None = None
    action: str | None = None
    note: str | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class NotificationView:
    id: str
    kind: str
    case: str
    by: Ref | None
    created_at: datetime
    read: bool


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Counts:
    folders: dict[str, int]
    labels: dict[str, int] = field(default_factory=dict)


# --- authentication and bootstrap ---------------------------------------------------------------
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
        return _actors_of(session, [user])[user.id]


def _actors_of(session: Session, users: Sequence[User]) -> dict[str, Actor]:
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


def bootstrap_org(
    store: ServiceStore, *, org: str, name: str, admin_email: str, admin_name: str | None = None
) -> tuple[str, str]:
    """Create an org (or adopt one events already created) and its first administrator.

    Returns (user id, token); the token is shown once. Refuses an org that has an administrator.
    """
    if not ORG_PATTERN.match(org):
        raise ValueError("an org key is 1-64 lowercase letters, digits, '-' or '_'")
    with store.unit_of_work() as uow:
        session = uow.session
        row = _ensure_org(session, org)
        has_admin = session.scalar(
            select(User.id).where(User.org == org, User.role == ADMINISTRATOR).limit(1)
        )
        if has_admin is not None:
            raise Conflict("ORG_EXISTS", f"org {org} already has an administrator")
        row.name = name
        _org_changed(uow, row)
        user = User(
            id=new_id(),
            org=org,
            partner_id=None,
            role=ADMINISTRATOR,
            name=admin_name or admin_email.split("@")[0],
            email=admin_email.lower(),
        )
        session.add(user)
        session.flush()  # the token refers to the user
        token = _new_token(session, user.id, "bootstrap")
        uow.commit()
    return user.id, token.token


def _new_token(session: Session, user_id: str, description: str) -> NewToken:
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


# --- what one unit of work already knows ---------------------------------------------------------
@dataclass
class _Known:
    """Rows a unit of work loaded or wrote, held strongly for the rest of its transaction.

    The session's identity map holds objects weakly, so without this every event of a worker's
    batch would read the org, its labels and a message inserted a moment ago again (bench:
    round trips to PostgreSQL are what limits the cases worker). It lives in ``session.info``
    and is dropped when the transaction ends (commit, rollback, close): a batch that fails and is
    retried one event at a time starts from the database again.
    """

    orgs: dict[str, Org] = field(default_factory=dict)
    contacts: dict[tuple[str, str], Contact] = field(default_factory=dict)
    new_contacts: set[str] = field(default_factory=set)  # created in this transaction: no case
    messages: dict[str, Message] = field(default_factory=dict)
    message_labels: dict[str, set[str]] = field(default_factory=dict)
    live_labels: dict[str, set[str]] = field(default_factory=dict)
    open_cases: dict[str, Case] = field(default_factory=dict)  # by contact id
    # What ``prepare_message_events`` read in bulk: a key in here but not in the dict above is
    # not in the database either, so nobody asks again.
    messages_read: set[str] = field(default_factory=set)
    open_cases_read: set[str] = field(default_factory=set)


_KNOWN = "cases.known"


def _known(session: Session) -> _Known:
    known = session.info.get(_KNOWN)
    if known is None:
        known = session.info[_KNOWN] = _Known()
        if not sa_event.contains(session, "after_transaction_end", _forget_known):
            sa_event.listen(session, "after_transaction_end", _forget_known)
    return known


def _forget_known(session: Session, transaction: Any) -> None:
    """At the end of the transaction or of a savepoint, not of a flush's inner transaction."""
    if transaction.parent is None or transaction.nested:
        session.info.pop(_KNOWN, None)


# --- orgs ---------------------------------------------------------------------------------------
def _ensure_org(session: Session, key: str) -> Org:
    """The org; events of an org nobody set up yet create it with defaults (adopted later by
    ``bootstrap_org``), so that nothing they carry is lost."""
    known = _known(session).orgs
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
                pseudonym_salt=auth.new_secret(),
                org_version=0,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        org = session.get(Org, key)
    known[key] = org  # type: ignore[assignment]
    return org  # type: ignore[return-value]


def _org_changed(uow: UnitOfWork, org: Org) -> None:
    org.org_version += 1
    uow.emit(
        ev.ORG_UPDATED,
        org=org.key,
        data={
            "name": org.name,
            "timezone": org.timezone,
            "suspend_groups": list(org.suspend_groups),
            "followup_flow": org.followup_flow,
            "followup_every_close": org.followup_every_close,
            "interrupt_on_open": org.interrupt_on_open,
            "mirror_labels": org.mirror_labels,
            "mirror_archive": org.mirror_archive,
            "org_version": org.org_version,
        },
    )


def _org_view(session: Session, org: Org) -> OrgView:
    catalog = session.get(Catalog, org.key)
    groups = {g["uuid"]: g["name"] for g in catalog.groups} if catalog else {}
    flows = {f["uuid"]: f["name"] for f in catalog.flows} if catalog else {}
    followup = org.followup_flow
    return OrgView(
        key=org.key,
        name=org.name,
        timezone=org.timezone,
        suspend_groups=[CatalogRef(uuid, groups.get(uuid)) for uuid in org.suspend_groups],
        followup_flow=CatalogRef(followup, flows.get(followup)) if followup else None,
        followup_every_close=org.followup_every_close,
        interrupt_on_open=org.interrupt_on_open,
        mirror_labels=org.mirror_labels,
        mirror_archive=org.mirror_archive,
        display_field=org.display_field,
        warning_days=org.warning_days,
        org_version=org.org_version,
    )


def get_org(store: ServiceStore, actor: Actor) -> OrgView:
    with store.unit_of_work() as uow:
        return _org_view(uow.session, _ensure_org(uow.session, actor.org))


ORG_SETTINGS = (
    "name",
    "timezone",
    "suspend_groups",
    "followup_flow",
    "followup_every_close",
    "interrupt_on_open",
    "mirror_labels",
    "mirror_archive",
    "display_field",
    "warning_days",
)


def update_org(store: ServiceStore, actor: Actor, changes: dict[str, Any]) -> OrgView:
    """Change the org's settings; each change emits org.updated with a higher org_version.

    Once the flow engine's catalog is known, groups and flows must be in it (and suspend groups
    must not be smart groups, which the engine computes and cannot change); before that any
    uuid is accepted.
    """
    _require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        org = _ensure_org(session, actor.org)
        catalog = session.get(Catalog, org.key)
        if catalog is not None:
            _check_against_catalog(catalog, changes)
        changed = False
        for key in ORG_SETTINGS:
            if key in changes and getattr(org, key) != changes[key]:
                setattr(org, key, changes[key])
                changed = True
        if changed:
            _org_changed(uow, org)
            uow.commit()
        return _org_view(session, org)


def _check_against_catalog(catalog: Catalog, changes: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    groups = {g["uuid"]: g for g in catalog.groups}
    for uuid in changes.get("suspend_groups") or []:
        group = groups.get(uuid)
        if group is None:
            errors.setdefault("suspend_groups", []).append(f"No group {uuid} in the flow engine.")
        elif group.get("smart"):
            errors.setdefault("suspend_groups", []).append(
                f"{group['name']} is a smart group: the flow engine cannot remove contacts from it."
            )
    flow = changes.get("followup_flow")
    if flow and flow not in {f["uuid"] for f in catalog.flows}:
        errors["followup_flow"] = [f"No flow {flow} in the flow engine."]
    if errors:
        raise Invalid(errors)


def org_catalog(store: ServiceStore, actor: Actor) -> CatalogView:
    """The groups and flows to pick from, by name (empty until flowbridge synced them)."""
    _require_admin(actor)
    with store.unit_of_work() as uow:
        catalog = uow.session.get(Catalog, actor.org)
        if catalog is None:
            return CatalogView([], [], None)
        return CatalogView(
            sorted(catalog.groups, key=lambda g: g["name"].lower()),
            sorted(catalog.flows, key=lambda f: f["name"].lower()),
            catalog.synced_on,
        )


def _require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("Only an org administrator can do this.")


# --- partners -----------------------------------------------------------------------------------
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
    _require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        _ensure_org(session, actor.org)
        partner = Partner(
            id=new_id(),
            org=actor.org,
            name=values["name"],
            description=values.get("description", ""),
            restricted=values.get("restricted", False),
        )
        session.add(partner)
        _flush_unique(session, "PARTNER_NAME_TAKEN", "A partner of this org has that name.")
        _set_partner_labels(session, actor, partner, values.get("labels", []))
        uow.commit()
        return _partner_view(session, partner)


def update_partner(
    store: ServiceStore, actor: Actor, partner_id: str, changes: dict[str, Any]
) -> PartnerView:
    with store.unit_of_work() as uow:
        session = uow.session
        partner = _load_partner(session, actor, partner_id)
        _require_admin(actor)
        for key in ("name", "description", "restricted"):
            if key in changes:
                setattr(partner, key, changes[key])
        _flush_unique(session, "PARTNER_NAME_TAKEN", "A partner of this org has that name.")
        if "labels" in changes:
            _set_partner_labels(session, actor, partner, changes["labels"])
        uow.commit()
        return _partner_view(session, partner)


def _set_partner_labels(
    session: Session, actor: Actor, partner: Partner, label_ids: Sequence[str]
) -> None:
    _known_labels(session, actor, label_ids, "labels")
    session.execute(delete(PartnerLabel).where(PartnerLabel.partner_id == partner.id))
    session.add_all(PartnerLabel(partner_id=partner.id, label_id=lid) for lid in set(label_ids))


def _flush_unique(session: Session, code: str, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(code, message) from exc


# --- users and tokens ---------------------------------------------------------------------------
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
        org = _ensure_org(session, actor.org)
        assert user is not None
        return MeView(
            _user_view(session, user),
            OrgRef(org.key, org.name),
            actor.restricted,
            sorted(actor.partner_labels),
        )


def _load_user(session: Session, actor: Actor, user_id: str) -> User:
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
        return _user_view(uow.session, _load_user(uow.session, actor, user_id))


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
        _flush_unique(session, "EMAIL_TAKEN", "A user of this org has that email.")
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
        user = _load_user(session, actor, user_id)
        role = changes.get("role", user.role)
        if user.id == actor.user_id and set(changes) <= {"name"}:
            pass  # everyone may rename themselves
        elif not (
            can_manage_user(actor, user.partner_id, user.role)
            and can_manage_user(actor, user.partner_id, role)
        ):
            raise Forbidden("Your role cannot change this user.")
        if user.id == actor.user_id and (changes.get("active") is False or role != user.role):
            raise Conflict("CANNOT_CHANGE_SELF", "You cannot deactivate or demote yourself.")
        if role != user.role:
            _check_role_partner(session, actor, role, user.partner_id)
        for key in ("name", "role", "active"):
            if key in changes:
                setattr(user, key, changes[key])
        uow.commit()
        return _user_view(session, user)


def _load_managed_user(session: Session, actor: Actor, user_id: str) -> User:
    user = _load_user(session, actor, user_id)
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
        token = _new_token(uow.session, user.id, description)
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


# --- labels -------------------------------------------------------------------------------------
def _label_view(label: Label) -> LabelView:
    return LabelView(
        label.id,
        label.name,
        label.description,
        label.synced,
        label.active,
        list(label.rule),
        describe_rule(parse_rule(label.rule)),
        label.label_version,
    )


def _load_label(session: Session, actor: Actor, label_id: str) -> Label:
    label = session.get(Label, label_id)
    if (
        label is None
        or label.org != actor.org
        or label.deleted_at is not None
        or not actor.sees_label(label.id)
    ):
        raise NotFound("label")
    return label


def _known_labels(
    session: Session, actor: Actor, label_ids: Iterable[str], field_name: str
) -> dict[str, str]:
    """Names of the given labels, which must exist and be visible; else Invalid on the field."""
    wanted = set(label_ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(Label.id, Label.name).where(
            Label.org == actor.org, Label.id.in_(wanted), Label.deleted_at.is_(None)
        )
    ).all()
    found = {row.id: row.name for row in rows if actor.sees_label(row.id)}
    unknown = sorted(wanted - found.keys())
    if unknown:
        raise Invalid({field_name: [f"Unknown label: {label}." for label in unknown]})
    return found


def list_labels(store: ServiceStore, actor: Actor) -> list[LabelView]:
    with store.unit_of_work() as uow:
        labels = uow.session.scalars(
            select(Label)
            .where(Label.org == actor.org, Label.deleted_at.is_(None))
            .order_by(Label.name)
        )
        return [_label_view(label) for label in labels if actor.sees_label(label.id)]


def get_label(store: ServiceStore, actor: Actor, label_id: str) -> LabelView:
    with store.unit_of_work() as uow:
        return _label_view(_load_label(uow.session, actor, label_id))


def create_label(store: ServiceStore, actor: Actor, values: dict[str, Any]) -> LabelView:
    _require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        _ensure_org(session, actor.org)
        _check_label_name(session, actor.org, values["name"], None)
        label = Label(
            id=new_id(),
            org=actor.org,
            name=values["name"],
            description=values.get("description", ""),
            synced=values.get("synced", False),
            active=values.get("active", True),
            rule=_normalised_rule(values.get("rule", [])),
            label_version=1,
        )
        session.add(label)
        _flush_unique(session, "LABEL_NAME_TAKEN", "A label of this org has that name.")
        _emit_label(uow, label, ev.LABEL_CREATED)
        uow.commit()
        return _label_view(label)


def update_label(
    store: ServiceStore, actor: Actor, label_id: str, changes: dict[str, Any]
) -> LabelView:
    with store.unit_of_work() as uow:
        session = uow.session
        label = _load_label(session, actor, label_id)
        _require_admin(actor)
        if "name" in changes:
            _check_label_name(session, actor.org, changes["name"], label.id)
        if "rule" in changes:
            changes = {**changes, "rule": _normalised_rule(changes["rule"])}
        changed = False
        for key in ("name", "description", "synced", "active", "rule"):
            if key in changes and getattr(label, key) != changes[key]:
                setattr(label, key, changes[key])
                changed = True
        if changed:
            label.label_version += 1
            _flush_unique(session, "LABEL_NAME_TAKEN", "A label of this org has that name.")
            _emit_label(uow, label, ev.LABEL_UPDATED)
            uow.commit()
        return _label_view(label)


def delete_label(store: ServiceStore, actor: Actor, label_id: str) -> None:
    """Delete a label: it leaves every message, case and partner; a tombstone keeps its
    version so the label.deleted event outranks every earlier one."""
    with store.unit_of_work() as uow:
        session = uow.session
        label = _load_label(session, actor, label_id)
        _require_admin(actor)
        label.deleted_at = utcnow()
        label.label_version += 1
        affected = session.scalars(
            select(Case)
            .join(CaseLabel, CaseLabel.case_id == Case.id)
            .where(CaseLabel.label_id == label.id)
        ).all()
        session.execute(delete(MessageLabel).where(MessageLabel.label_id == label.id))
        session.execute(delete(CaseLabel).where(CaseLabel.label_id == label.id))
        session.execute(delete(PartnerLabel).where(PartnerLabel.label_id == label.id))
        for case in affected:
            _case_changed(case)
            _emit_case(
                uow,
                session,
                case,
                ev.CASE_LABELS_CHANGED,
                labels=sorted(_case_label_ids(session, case.id)),
            )
        uow.emit(
            ev.LABEL_DELETED,
            org=label.org,
            data={"label_uuid": label.id, "label_version": label.label_version},
        )
        uow.commit()


def _normalised_rule(rule: Any) -> list[dict[str, Any]]:
    try:
        return rule_to_json(parse_rule(rule))
    except RuleError as exc:
        raise Invalid({"rule": [str(exc)]}) from exc


def _check_label_name(session: Session, org: str, name: str, label_id: str | None) -> None:
    taken = session.scalar(
        select(Label.id).where(
            Label.org == org,
            func.lower(Label.name) == name.lower(),
            Label.deleted_at.is_(None),
            Label.id != (label_id or ""),
        )
    )
    if taken is not None:
        raise Conflict("LABEL_NAME_TAKEN", "A label of this org has that name.")


def _emit_label(uow: UnitOfWork, label: Label, name: str) -> None:
    uow.emit(
        name,
        org=label.org,
        data={
            "label_uuid": label.id,
            "name": label.name,
            "synced": label.synced,
            "active": label.active,
            "rule": list(label.rule),
            "label_version": label.label_version,
        },
    )


# --- contacts -----------------------------------------------------------------------------------
def _ensure_contact(
    session: Session,
    org: Org,
    contact_uuid: str,
    *,
    fields: dict[str, Any] | None = None,
    fields_at: datetime | None = None,
) -> Contact:
    """The org's contact of this uuid, created (with these fields) if new.

    A new contact gets the short pseudonym unless another contact of the org has it already
    (``uq_contacts_ref`` tells, in the same INSERT), then the long one. Contacts created in this
    transaction are remembered in ``_known(session).new_contacts``.
    """
    known = _known(session)
    contact = known.contacts.get((org.key, contact_uuid)) or _contact_by_uuid(
        session, org, contact_uuid
    )
    if contact is None:
        values = {"fields": dict(fields or {}), "fields_at": fields_at}
        short = pseudonym(org.pseudonym_salt, org.key, contact_uuid)
        contact = _insert_contact(session, org, contact_uuid, short, values)
        if contact is None:  # a replica created it a moment ago, or another contact has the ref
            contact = _contact_by_uuid(session, org, contact_uuid)
        if contact is None:
            long = pseudonym(org.pseudonym_salt, org.key, contact_uuid, LONG_REF_LENGTH)
            contact = _insert_contact(session, org, contact_uuid, long, values, any_conflict=False)
            contact = contact or _contact_by_uuid(session, org, contact_uuid)
        assert contact is not None
    known.contacts[(org.key, contact_uuid)] = contact
    return contact


def _insert_contact(
    session: Session,
    org: Org,
    contact_uuid: str,
    ref: str,
    values: dict[str, Any],
    *,
    any_conflict: bool = True,
) -> Contact | None:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: the new contact, or None when it collided
    (on its uuid, or with ``any_conflict`` also on its ref)."""
    statement = insert_statement(session, Contact).values(
        id=new_id(), org=org.key, uuid=contact_uuid, ref=ref, created_at=utcnow(), **values
    )
    statement = statement.on_conflict_do_nothing(
        index_elements=None if any_conflict else ["org", "uuid"]
    )
    contact = session.scalars(statement.returning(Contact)).first()
    if contact is not None:
        _known(session).new_contacts.add(contact.id)
    return contact


def _contact_by_uuid(session: Session, org: Org, contact_uuid: str) -> Contact | None:
    return session.scalar(
        select(Contact).where(Contact.org == org.key, Contact.uuid == contact_uuid)
    )


def _contact_view(contact: Contact, org: Org) -> ContactView:
    return ContactView(contact.ref, display_value(contact.fields, org.display_field))


# --- consumed events: messages ------------------------------------------------------------------
MESSAGE_EVENTS = (ev.MESSAGE_RECEIVED, ev.MESSAGE_LABELED)


def prepare_message_events(uow: UnitOfWork, events: list[Envelope]) -> None:
    """Before a worker's batch of message events is handled one by one: read their orgs, the
    orgs' labels, contacts, messages, these messages' labels and the contacts' open cases in one
    query each,
    and insert the contacts new to their org in one statement. The handlers then find all of it
    in ``_known`` (bench: one round trip per row was what limited the cases worker)."""
    session, known = uow.session, _known(uow.session)
    events = [event for event in events if event.name in MESSAGE_EVENTS]
    by_org: dict[str, dict[str, list[Envelope]]] = {}
    for event in events:
        by_org.setdefault(event.org, {}).setdefault(event.data["contact_uuid"], []).append(event)
    old_contacts: list[str] = []
    for org_key, contact_events in by_org.items():
        org = _ensure_org(session, org_key)
        _live_labels(session, org.key)
        uuids = list(contact_events)
        for contact in session.scalars(
            select(Contact).where(Contact.org == org.key, Contact.uuid.in_(uuids))
        ):
            known.contacts[(org.key, contact.uuid)] = contact
            old_contacts.append(contact.id)
        new = {u: contact_events[u] for u in uuids if (org.key, u) not in known.contacts}
        _insert_contacts(session, org, new)
    if old_contacts:
        for case in session.scalars(
            select(Case).where(Case.contact_id.in_(old_contacts), Case.closed_on.is_(None))
        ):
            known.open_cases[case.contact_id] = case
        known.open_cases_read.update(old_contacts)
    message_ids = {event.data["message_id"] for event in events}
    if not message_ids:
        return
    for message in session.scalars(select(Message).where(Message.id.in_(message_ids))):
        known.messages[message.id] = message
        known.message_labels[message.id] = set()
    found = [mid for mid in message_ids if mid in known.messages]
    if found:
        rows = session.execute(
            select(MessageLabel.message_id, MessageLabel.label_id).where(
                MessageLabel.message_id.in_(found)
            )
        )
        for message_id, label_id in rows:
            known.message_labels[message_id].add(label_id)
    known.messages_read.update(message_ids)


def _insert_contacts(session: Session, org: Org, new: dict[str, list[Envelope]]) -> None:
    """Insert contacts new to the org in one statement, each with its short pseudonym and the
    fields of its newest message in the batch (what handling the events one by one leaves).
    One whose pseudonym another contact has is left out: ``_ensure_contact`` handles it alone."""
    if not new:
        return
    rows = []
    for contact_uuid, events in new.items():
        received = [e.data for e in events if e.name == ev.MESSAGE_RECEIVED]
        newest = max(received, key=lambda data: data["received_at"], default=None)
        rows.append(
            {
                "id": new_id(),
                "org": org.key,
                "uuid": contact_uuid,
                "ref": pseudonym(org.pseudonym_salt, org.key, contact_uuid),
                "fields": dict(newest["contact_fields"]) if newest else {},
                "fields_at": newest["received_at"] if newest else None,
                "created_at": utcnow(),
            }
        )
    statement = insert_statement(session, Contact).values(rows).on_conflict_do_nothing()
    known = _known(session)
    for contact in session.scalars(statement.returning(Contact)):
        known.contacts[(org.key, contact.uuid)] = contact
        known.new_contacts.add(contact.id)


def on_message_received(uow: UnitOfWork, event: Envelope) -> None:
    """Store the message; while its contact has an open case it goes into the case, archived."""
    session, data = uow.session, event.data
    org = _ensure_org(session, event.org)
    received_at = data["received_at"]
    contact = _ensure_contact(
        session, org, data["contact_uuid"], fields=data["contact_fields"], fields_at=received_at
    )
    if contact.fields_at is None or received_at >= contact.fields_at:
        contact.fields = dict(data["contact_fields"])  # unchanged (no UPDATE) for a new contact
        contact.fields_at = received_at
    values = {
        "external_id": data["external_id"],
        "text": data["text"],
        "attachments": [dict(a) for a in data["attachments"]],
        "flow_uuid": data["flow_uuid"],
        "flow_name": data["flow_name"],
        "node_uuid": data["node_uuid"],
        "simulation": data["simulation"],
        "received_at": received_at,
    }
    message, created = _ensure_message(session, event, contact, values)
    if message is None:
        return
    first_receipt = created or message.received_at is None
    if not created:  # a new message was inserted with these values already
        values["external_id"] = data["external_id"] or message.external_id
        for key, value in values.items():
            setattr(message, key, value)
    if not first_receipt or message.case_id is not None:
        return
    if contact.id in _known(session).new_contacts:
        return  # created in this transaction: nobody could open a case for it yet
    case = _known_open_case(session, contact.id)
    if case is None:
        return
    message.case_id = case.id
    if not message.archived:
        message.archived = True
        session.add(
            MessageAction(id=new_id(), message_id=message.id, action="archive", case_id=case.id)
        )
        _mirror_archive(uow, org, ev.MESSAGE_ARCHIVED, [message])
    _notify(session, case, "message", None, _watchers(session, case.id))


def on_message_labeled(uow: UnitOfWork, event: Envelope) -> None:
    """Apply the labeler's newest opinion; an older one arriving late changes nothing.

    Everything is read before anything changes, so that the message's changes go out in one
    UPDATE (a query in between would autoflush them).
    """
    session, data = uow.session, event.data
    org = _ensure_org(session, event.org)
    contact = _ensure_contact(session, org, data["contact_uuid"])
    message, _ = _ensure_message(session, event, contact)
    if message is None:
        return
    if message.labeler_at is not None and event.occurred_at <= message.labeler_at:
        message.labelled = True
        return
    current = _known_message_labels(session, message.id)
    merged = merge_labeler_labels(current, set(message.labeler_labels), set(data["labels"]))
    _set_message_labels(session, message, current, _existing_labels(session, org.key, merged))
    message.labelled = True
    message.labeler_labels = sorted(data["labels"])
    message.labeler_at = event.occurred_at


def _ensure_message(
    session: Session, event: Envelope, contact: Contact, values: dict[str, Any] | None = None
) -> tuple[Message | None, bool]:
    """The event's message and whether this call created it (with ``values``); None when the
    message names another org or contact than the event."""
    data = event.data
    known = _known(session)
    message = known.messages.get(data["message_id"])
    if message is None and data["message_id"] not in known.messages_read:
        message = session.get(Message, data["message_id"])
    created = message is None
    if message is None:
        message = Message(
            id=data["message_id"],
            org=event.org,
            contact_id=contact.id,
            external_id=data.get("external_id"),
            attachments=[],
            labeler_labels=[],
            simulation=data.get("simulation", False),
        )
        for key, value in (values or {}).items():
            setattr(message, key, value)
        session.add(message)  # a replica inserting it too collides at the flush; we retry then
        known.message_labels[message.id] = set()
    elif message.org != event.org or message.contact_id != contact.id:
        log.error("%s %s names another org or contact than before; ignored", event.name, event.id)
        return None, False
    known.messages[message.id] = message
    return message, created


def _existing_labels(session: Session, org: str, label_ids: set[str]) -> set[str]:
    """Those of the labels that exist (not deleted); the org's labels are read once per unit of
    work."""
    if not label_ids:
        return set()
    return label_ids & _live_labels(session, org)


def _live_labels(session: Session, org: str) -> set[str]:
    live = _known(session).live_labels
    if org not in live:
        live[org] = set(
            session.scalars(select(Label.id).where(Label.org == org, Label.deleted_at.is_(None)))
        )
    return live[org]


def _message_label_ids(session: Session, message_id: str) -> set[str]:
    return set(
        session.scalars(select(MessageLabel.label_id).where(MessageLabel.message_id == message_id))
    )


def _known_message_labels(session: Session, message_id: str) -> set[str]:
    """The message's labels, read once per unit of work (``_set_message_labels`` keeps them)."""
    known = _known(session).message_labels
    if message_id not in known:
        known[message_id] = _message_label_ids(session, message_id)
    return set(known[message_id])


def _set_message_labels(
    session: Session, message: Message, current: set[str], label_ids: set[str]
) -> None:
    """Make the message's labels ``label_ids``; ``current`` are the ones it has now."""
    if removed := current - label_ids:
        session.execute(
            delete(MessageLabel).where(
                MessageLabel.message_id == message.id, MessageLabel.label_id.in_(removed)
            )
        )
    session.add_all(
        MessageLabel(message_id=message.id, label_id=lid) for lid in label_ids - current
    )
    known = _known(session).message_labels
    if message.id in known:
        known[message.id] = set(label_ids)


def _mirror_archive(uow: UnitOfWork, org: Org, name: str, messages: Sequence[Message]) -> None:
    """message.archived / message.restored, only for orgs that mirror archiving."""
    if not org.mirror_archive or not messages:
        return
    uow.emit(
        name,
        org=org.key,
        data={
            "message_ids": [m.id for m in messages],
            "external_ids": [m.external_id for m in messages if m.external_id],
        },
    )


# --- consumed events: flowbridge ----------------------------------------------------------------
def on_outgoing_sent(uow: UnitOfWork, event: Envelope) -> None:
    outgoing = _outgoing_of(uow.session, event)
    if outgoing is not None and outgoing.delivery != "sent":
        outgoing.delivery = "sent"
        outgoing.failure = None
        outgoing.sent_on = event.data["sent_on"]


def on_outgoing_failed(uow: UnitOfWork, event: Envelope) -> None:
    """A failure never overrides a delivery the engine confirmed (they may arrive reversed)."""
    session = uow.session
    outgoing = _outgoing_of(session, event)
    if outgoing is None or outgoing.delivery != "pending":
        return
    outgoing.delivery = "failed"
    outgoing.failure = event.data["reason"]
    if outgoing.case_id is not None:
        case = session.get(Case, outgoing.case_id)
        if case is not None:
            _notify(session, case, "failed", None, [outgoing.user_id])


def _outgoing_of(session: Session, event: Envelope) -> Outgoing | None:
    outgoing = session.get(Outgoing, event.data["outgoing_id"])
    if outgoing is None or outgoing.org != event.org:
        log.warning("%s for unknown reply %s ignored", event.name, event.data["outgoing_id"])
        return None
    return outgoing


def on_contact_suspended(uow: UnitOfWork, event: Envelope) -> None:
    data = event.data
    _system_action(
        uow.session,
        event,
        "suspended",
        {"groups": list(data["groups"]), "skipped": list(data["skipped"])},
    )


def on_contact_restored(uow: UnitOfWork, event: Envelope) -> None:
    data = event.data
    _system_action(
        uow.session, event, "restored", {"groups": list(data["groups"]), "reason": data["reason"]}
    )


def on_followup_started(uow: UnitOfWork, event: Envelope) -> None:
    catalog = uow.session.get(Catalog, event.org)
    flows = {f["uuid"]: f["name"] for f in catalog.flows} if catalog else {}
    flow = event.data["flow_uuid"]
    _system_action(
        uow.session, event, "followup", {"flow": {"uuid": flow, "name": flows.get(flow)}}
    )


def _system_action(session: Session, event: Envelope, kind: str, details: dict[str, Any]) -> None:
    """What flowbridge did for a case, in its timeline at the moment it happened."""
    case = session.get(Case, event.data["case_id"])
    if case is None or case.org != event.org:
        log.warning("%s for unknown case %s ignored", event.name, event.data["case_id"])
        return
    session.add(
        CaseAction(
            id=new_id(), case_id=case.id, kind=kind, data=details, created_at=event.occurred_at
        )
    )


def on_catalog_synced(uow: UnitOfWork, event: Envelope) -> None:
    session, data = uow.session, event.data
    _ensure_org(session, event.org)
    catalog = session.get(Catalog, event.org)
    if catalog is None:
        catalog = Catalog(org=event.org, synced_on=data["synced_on"])
        session.add(catalog)
    elif data["synced_on"] <= catalog.synced_on:
        return  # an older snapshot arriving late
    catalog.groups = [dict(g) for g in data["groups"]]
    catalog.flows = [dict(f) for f in data["flows"]]
    catalog.synced_on = data["synced_on"]


# --- the inbox ----------------------------------------------------------------------------------
def _message_visibility(actor: Actor) -> Any:
    """SQL twin of domain.can_see_message for listing: by labels."""
    labelled = exists().where(MessageLabel.message_id == Message.id)
    if actor.is_admin:
        return true()
    if actor.restricted:
        if not actor.partner_labels:
            return false()
        labelled = labelled.where(MessageLabel.label_id.in_(actor.partner_labels))
    return labelled


def _load_message(session: Session, actor: Actor, message_id: str) -> Message:
    message = session.get(Message, message_id)
    if message is None or message.org != actor.org or message.received_at is None:
        raise NotFound("message")
    access = Access.NONE
    if message.case_id is not None:
        case = session.get(Case, message.case_id)
        if case is not None:
            access = case_access(actor, case.partner_id, _case_label_ids(session, case.id))
    if not can_see_message(actor, _message_label_ids(session, message.id), access):
        raise NotFound("message")
    return message


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
    if folder == "unlabelled":
        _require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        conditions = [
            Message.org == actor.org,
            Message.received_at.is_not(None),
            _folder_condition(actor, folder),
        ]
        if not simulation:
            conditions.append(Message.simulation.is_(False))
        if label is not None:
            if not actor.sees_label(label):
                return Page([])
            conditions.append(
                exists().where(
                    MessageLabel.message_id == Message.id, MessageLabel.label_id == label
                )
            )
        conditions += _common_filters(
            session, actor, Message, Message.received_at, contact, text, after, before
        )
        page, next_cursor = _newest_first(
            session, Message, Message.received_at, conditions, cursor, limit
        )
        org = _ensure_org(session, actor.org)
        items = _message_views(session, actor, org, page)
        return Page(items, next_cursor)


def _folder_condition(actor: Actor, folder: str) -> Any:
    visible = _message_visibility(actor)
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
        conditions.append(model.contact_id == _contact_id_of(session, actor, contact))
    if text:
        conditions.append(model.text.icontains(text, autoescape=True))
    if after is not None:
        conditions.append(timestamp > after)
    if before is not None:
        conditions.append(timestamp < before)
    return conditions


def _contact_id_of(session: Session, actor: Actor, ref: str) -> str:
    # An unknown reference matches nothing, like a known one with no visible message.
    contact_id = session.scalar(
        select(Contact.id).where(Contact.org == actor.org, Contact.ref == ref.upper())
    )
    return contact_id or ""


def _list_sent(store, actor, *, contact, text, after, before, cursor, limit) -> Page:
    with store.unit_of_work() as uow:
        session = uow.session
        conditions = [Outgoing.org == actor.org]
        if not actor.is_admin:
            conditions.append(Outgoing.partner_id == actor.partner_id)
        conditions += _common_filters(
            session, actor, Outgoing, Outgoing.created_at, contact, text, after, before
        )
        page, next_cursor = _newest_first(
            session, Outgoing, Outgoing.created_at, conditions, cursor, limit
        )
        org = _ensure_org(session, actor.org)
        items = _outgoing_views(session, org, page)
        return Page(items, next_cursor)


def message_counts(store: ServiceStore, actor: Actor, *, simulation: bool = False) -> Counts:
    """How many messages each folder holds, and how many inbox messages carry each label."""
    with store.unit_of_work() as uow:
        session = uow.session
        base = [Message.org == actor.org, Message.received_at.is_not(None)]
        if not simulation:
            base.append(Message.simulation.is_(False))
        # One pass over the org's messages for every folder, rather than one count per folder.
        has_label = exists().where(MessageLabel.message_id == Message.id)
        inbox = Message.archived.is_(False)
        folders = {
            "inbox": and_(inbox, has_label) if actor.is_admin else inbox,
            "flagged": Message.flagged.is_(True),
            "archived": Message.archived.is_(True),
        }
        if actor.is_admin:
            folders["unlabelled"] = and_(inbox, ~has_label)
        row = session.execute(
            select(*(func.count().filter(cond).label(name) for name, cond in folders.items()))
            .select_from(Message)
            .where(*base, _message_visibility(actor))
        ).one()
        counts = {name: getattr(row, name) or 0 for name in folders}
        sent = select(func.count()).select_from(Outgoing).where(Outgoing.org == actor.org)
        if not actor.is_admin:
            sent = sent.where(Outgoing.partner_id == actor.partner_id)
        counts["sent"] = session.scalar(sent) or 0
        per_label_query = (
            select(MessageLabel.label_id, func.count())
            .join(Message, Message.id == MessageLabel.message_id)
            .where(*base, Message.archived.is_(False))
            .group_by(MessageLabel.label_id)
        )
        if actor.restricted:
            per_label_query = per_label_query.where(MessageLabel.label_id.in_(actor.partner_labels))
        per_label = session.execute(per_label_query).all()
        labels = {row[0]: row[1] for row in per_label if actor.sees_label(row[0])}
        return Counts(counts, labels)


def get_message(store: ServiceStore, actor: Actor, message_id: str) -> MessageView:
    with store.unit_of_work() as uow:
        session = uow.session
        message = _load_message(session, actor, message_id)
        return _message_views(session, actor, _ensure_org(session, actor.org), [message])[0]


def message_history(store: ServiceStore, actor: Actor, message_id: str) -> list[HistoryEntry]:
    with store.unit_of_work() as uow:
        session = uow.session
        message = _load_message(session, actor, message_id)
        rows = session.scalars(
            select(MessageAction)
            .where(MessageAction.message_id == message.id)
            .order_by(MessageAction.created_at, MessageAction.id)
        ).all()
        people = _user_refs(session, {r.user_id for r in rows})
        labels = _label_refs(session, {r.label_id for r in rows if r.label_id})
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
        org = _ensure_org(session, actor.org)
        messages = [_load_message(session, actor, mid) for mid in dict.fromkeys(message_ids)]
        if action in ("label", "unlabel"):
            if label_id is None:
                raise Invalid({"label": ["A label is required for this action."]})
            _load_label(session, actor, label_id)
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
        if action == "archive":
            _mirror_archive(uow, org, ev.MESSAGE_ARCHIVED, changed)
        elif action == "restore":
            _mirror_archive(uow, org, ev.MESSAGE_RESTORED, changed)
        uow.commit()
        return _message_views(session, actor, org, messages)


def _apply_message_action(
    session: Session, message: Message, action: str, label_id: str | None
) -> bool:
    """Do one action to one message; False when it was already so."""
    if action in ("label", "unlabel"):
        assert label_id is not None
        current = _message_label_ids(session, message.id)
        wanted = current | {label_id} if action == "label" else current - {label_id}
        _set_message_labels(session, message, current, wanted)
        return wanted != current
    if action == "restore" and message.archived and message.case_id is not None:
        case = session.get(Case, message.case_id)
        state = _state(case) if case is not None else None
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


def reply_to_message(store: ServiceStore, actor: Actor, message_id: str, text: str) -> OutgoingView:
    """Send one message to the contact; the message answered is archived and unlocked."""
    with store.unit_of_work() as uow:
        session = uow.session
        org = _ensure_org(session, actor.org)
        message = _load_message(session, actor, message_id)
        contact = session.get(Contact, message.contact_id)
        assert contact is not None
        case = session.get(Case, message.case_id) if message.case_id else None
        if case is not None and _state(case) is not CaseState.OPEN:
            case = None  # a reply to an old case's message goes out on its own
        if case is not None:
            _load_case(session, actor, case.id, Access.UPDATE)  # it goes into the case
        outgoing = _send(uow, actor, org, contact, text, case=case, reply_to=message.id)
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
            _mirror_archive(uow, org, ev.MESSAGE_ARCHIVED, [message])
        message.locked_by = message.locked_until = None
        uow.commit()
        return _outgoing_views(session, org, [outgoing])[0]


def _send(
    uow: UnitOfWork,
    actor: Actor,
    org: Org,
    contact: Contact,
    text: str,
    *,
    case: Case | None,
    reply_to: str | None,
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
        delivery="pending",
        created_at=utcnow(),
    )
    uow.session.add(outgoing)
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


def lock_message(store: ServiceStore, actor: Actor, message_id: str) -> MessageView:
    """Take (or extend) the soft lock that tells colleagues someone is answering."""
    with store.unit_of_work() as uow:
        session = uow.session
        message = _load_message(session, actor, message_id)
        now = utcnow()
        if not may_lock(actor.user_id, message.locked_by, message.locked_until, now):
            holder = session.get(User, message.locked_by)
            raise Conflict(
                "MESSAGE_LOCKED",
                f"{holder.name if holder else 'Someone'} is answering this message.",
            )
        message.locked_by, message.locked_until = actor.user_id, now + LOCK_DURATION
        uow.commit()
        return _message_views(session, actor, _ensure_org(session, actor.org), [message])[0]


def unlock_message(store: ServiceStore, actor: Actor, message_id: str) -> MessageView:
    with store.unit_of_work() as uow:
        session = uow.session
        message = _load_message(session, actor, message_id)
        if lock_holder(message.locked_by, message.locked_until, utcnow()) == actor.user_id:
            message.locked_by = message.locked_until = None
            uow.commit()
        return _message_views(session, actor, _ensure_org(session, actor.org), [message])[0]


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
    people = _user_refs(session, {h for h in holders.values() if h})
    return [
        MessageView(
            id=m.id,
            contact=_contact_view(contacts[m.contact_id], org),
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


def _outgoing_views(session: Session, org: Org, rows: Sequence[Outgoing]) -> list[OutgoingView]:
    contacts = {
        c.id: c
        for c in session.scalars(
            select(Contact).where(Contact.id.in_({o.contact_id for o in rows}))
        )
    }
    people = _user_refs(session, {o.user_id for o in rows})
    return [
        OutgoingView(
            id=o.id,
            contact=_contact_view(contacts[o.contact_id], org),
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


def _user_refs(session: Session, user_ids: Iterable[str | None]) -> dict[str, Ref]:
    wanted = {u for u in user_ids if u}
    if not wanted:
        return {}
    rows = session.execute(select(User.id, User.name).where(User.id.in_(wanted)))
    return {row.id: Ref(row.id, row.name) for row in rows}


def _label_refs(session: Session, label_ids: Iterable[str]) -> dict[str, Ref]:
    wanted = set(label_ids)
    if not wanted:
        return {}
    rows = session.execute(select(Label.id, Label.name).where(Label.id.in_(wanted)))
    return {row.id: Ref(row.id, row.name) for row in rows}


# --- cases --------------------------------------------------------------------------------------
def _state(case: Case) -> CaseState:
    return CaseState.OPEN if case.closed_on is None else CaseState.CLOSED


def _known_open_case(session: Session, contact_id: str) -> Case | None:
    """The contact's open case, from what ``prepare_message_events`` read if it did."""
    known = _known(session)
    if contact_id in known.open_cases_read:
        return known.open_cases.get(contact_id)
    return _open_case_of(session, contact_id)


def _open_case_of(session: Session, contact_id: str) -> Case | None:
    return session.scalar(
        select(Case).where(Case.contact_id == contact_id, Case.closed_on.is_(None))
    )


def _case_label_ids(session: Session, case_id: str) -> set[str]:
    return set(session.scalars(select(CaseLabel.label_id).where(CaseLabel.case_id == case_id)))


def _load_case(
    session: Session, actor: Actor, case_id: str, needed: Access = Access.READ
) -> tuple[Case, Access]:
    case = session.get(Case, case_id)
    if case is None or case.org != actor.org:
        raise NotFound("case")
    access = case_access(actor, case.partner_id, _case_label_ids(session, case.id))
    if access is Access.NONE:
        raise NotFound("case")
    if access < needed:
        raise Forbidden("Only the assigned partner can change this case.")
    return case, access


def _case_visibility(actor: Actor) -> Any:
    """SQL twin of domain.case_access > NONE."""
    if actor.is_admin:
        return true()
    labelled = exists().where(CaseLabel.case_id == Case.id)
    if actor.restricted:
        if not actor.partner_labels:
            return Case.partner_id == actor.partner_id
        labelled = labelled.where(CaseLabel.label_id.in_(actor.partner_labels))
    return or_(Case.partner_id == actor.partner_id, labelled)


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
) -> tuple[CaseView, bool]:
    """Open a case on the contact of a message (or of a contact reference).

    Returns (case, created). A contact has at most one open case: if one is open already, or
    another request opens one at the same moment (the partial unique index decides), the
    caller gets that case and ``created`` is False.
    """
    with store.unit_of_work() as uow:
        session = uow.session
        org = _ensure_org(session, actor.org)
        source, person = _case_contact(session, actor, message, contact)
        assignee, assignee_user = _assignees(session, actor, partner, user)
        existing = _open_case_of(session, person.id)
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
            opened_on=now,
            close_count=0,
            case_version=1,
        )
        session.add(case)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()  # someone opened one a moment ago: answer with theirs
            existing = _open_case_of(session, person.id)
            if existing is None:
                raise
            return _existing_case(session, actor, org, existing)
        archived = _attach_messages(session, actor, case, source)
        if source is not None:
            inherited = _message_label_ids(session, source.id)
            session.add_all(CaseLabel(case_id=case.id, label_id=lid) for lid in inherited)
        _record_action(
            session,
            case,
            "open",
            actor,
            at=now,
            note=summary,
            data=_assignment(assignee, assignee_user),
        )
        _watch(session, case.id, {actor.user_id, case.user_id})
        if assignee_user is not None and assignee_user.id != actor.user_id:
            _notify(session, case, "assigned", actor.user_id, [assignee_user.id])
        _emit_case(
            uow,
            session,
            case,
            ev.CASE_OPENED,
            assignee_partner=_person(assignee),
            assignee_user=_person(assignee_user),
            opened_on=now.isoformat(),
            archived_external_ids=[m.external_id for m in archived if m.external_id]
            if org.mirror_archive
            else [],
        )
        if reply:
            _send(uow, actor, org, person, reply, case=case, reply_to=source.id if source else None)
        uow.commit()
        return _case_views(session, actor, org, [case])[0], True


def _existing_case(session: Session, actor: Actor, org: Org, case: Case) -> tuple[CaseView, bool]:
    if case_access(actor, case.partner_id, _case_label_ids(session, case.id)) is Access.NONE:
        raise Conflict("CONTACT_HAS_OPEN_CASE", "This contact already has an open case.")
    return _case_views(session, actor, org, [case])[0], False


def _case_contact(
    session: Session, actor: Actor, message_id: str | None, ref: str | None
) -> tuple[Message | None, Contact]:
    if message_id is not None:
        message = _load_message(session, actor, message_id)
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
                _message_visibility(actor),
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


def _assignment(partner: Partner, user: User | None) -> dict[str, Any]:
    return {"partner": _person(partner), "user": _person(user)}


def _person(row: Partner | User | None) -> dict[str, str] | None:
    return {"id": row.id, "name": row.name} if row is not None else None


def _case_changed(case: Case) -> None:
    """Every change of a case bumps its version, which every case event carries."""
    case.case_version += 1


def _emit_case(uow: UnitOfWork, session: Session, case: Case, name: str, **data: Any) -> None:
    contact = session.get(Contact, case.contact_id)
    assert contact is not None
    uow.emit(
        name,
        org=case.org,
        data={
            "case_id": case.id,
            "case_version": case.case_version,
            "contact_uuid": contact.uuid,
            **data,
        },
    )


def _watchers(session: Session, case_id: str) -> list[str]:
    return list(session.scalars(select(CaseWatcher.user_id).where(CaseWatcher.case_id == case_id)))


def _watch(session: Session, case_id: str, user_ids: Iterable[str | None]) -> None:
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
    actors = _actors_of(session, users)
    active = {u.id for u in users if u.active}
    labels = _case_label_ids(session, case.id)
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


def _drop_watchers_without_access(session: Session, case: Case) -> None:
    """After a reassignment or a change of labels: who can no longer read the case stops
    watching it."""
    _readers(session, case, _watchers(session, case.id))


def _notify(
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


def list_cases(
    store: ServiceStore,
    actor: Actor,
    *,
    state: str | None = None,
    partner: str | None = None,
    user: str | None = None,
    label: str | None = None,
    contact: str | None = None,
    opened_after: datetime | None = None,
    opened_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    with store.unit_of_work() as uow:
        session = uow.session
        conditions = [Case.org == actor.org, _case_visibility(actor)]
        if state == "open":
            conditions.append(Case.closed_on.is_(None))
        elif state == "closed":
            conditions.append(Case.closed_on.is_not(None))
        if partner is not None:
            conditions.append(Case.partner_id == partner)
        if user is not None:
            conditions.append(Case.user_id == user)
        if label is not None:
            if not actor.sees_label(label):
                return Page([])
            conditions.append(
                exists().where(CaseLabel.case_id == Case.id, CaseLabel.label_id == label)
            )
        if contact is not None:
            conditions.append(Case.contact_id == _contact_id_of(session, actor, contact))
        if opened_after is not None:
            conditions.append(Case.opened_on > opened_after)
        if opened_before is not None:
            conditions.append(Case.opened_on < opened_before)
        page, next_cursor = _newest_first(session, Case, Case.opened_on, conditions, cursor, limit)
        items = _case_views(session, actor, _ensure_org(session, actor.org), page)
        return Page(items, next_cursor)


def get_case(store: ServiceStore, actor: Actor, case_id: str) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id)
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


def _case_views(session: Session, actor: Actor, org: Org, cases: Sequence[Case]) -> list[CaseView]:
    if not cases:
        return []
    ids = [c.id for c in cases]
    contacts = {
        c.id: c
        for c in session.scalars(
            select(Contact).where(Contact.id.in_({c.contact_id for c in cases}))
        )
    }
    partners = {
        p.id: Ref(p.id, p.name)
        for p in session.scalars(
            select(Partner).where(Partner.id.in_({c.partner_id for c in cases}))
        )
    }
    people = _user_refs(session, {c.user_id for c in cases} | {c.opened_by for c in cases})
    labels: dict[str, list[Ref]] = {cid: [] for cid in ids}
    all_labels: dict[str, set[str]] = {cid: set() for cid in ids}
    for row in session.execute(
        select(CaseLabel.case_id, Label.id, Label.name)
        .join(Label, Label.id == CaseLabel.label_id)
        .where(CaseLabel.case_id.in_(ids))
        .order_by(Label.name)
    ):
        all_labels[row.case_id].add(row.id)
        if actor.sees_label(row.id):
            labels[row.case_id].append(Ref(row.id, row.name))
    watching = set(
        session.scalars(
            select(CaseWatcher.case_id).where(
                CaseWatcher.case_id.in_(ids), CaseWatcher.user_id == actor.user_id
            )
        )
    )
    now = utcnow()
    views = []
    for case in cases:
        state = _state(case)
        access = case_access(actor, case.partner_id, all_labels[case.id])
        views.append(
            CaseView(
                id=case.id,
                contact=_contact_view(contacts[case.contact_id], org),
                summary=case.summary,
                state=state.value,
                assignee_partner=partners[case.partner_id],
                assignee_user=people.get(case.user_id) if case.user_id else None,
                labels=labels[case.id],
                opened_by=people.get(case.opened_by) if case.opened_by else None,
                opened_on=case.opened_on,
                reopened_on=case.reopened_on,
                closed_on=case.closed_on,
                initial_message=case.initial_message_id,
                case_version=case.case_version,
                warning=needs_warning(
                    case.reopened_on or case.opened_on, state, now, org.warning_days
                ),
                watching=case.id in watching,
                access="update" if access is Access.UPDATE else "read",
            )
        )
    return views


_TIMELINE_SOURCES = ("incoming", "outgoing", "action")


def _newest_first(
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


def case_timeline(
    store: ServiceStore, actor: Actor, case_id: str, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """Messages in and out and actions, oldest first, paged on (time, kind, id)."""
    after = decode_cursor(cursor, datetime, int, str) if cursor else None
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id)
        rows: list[tuple[datetime, int, str, Any]] = []
        sources = (
            (Message, Message.received_at, Message.received_at.is_not(None)),
            (Outgoing, Outgoing.created_at, true()),
            (CaseAction, CaseAction.created_at, true()),
        )
        for rank, (model, at, condition) in enumerate(sources):
            query = select(model).where(model.case_id == case.id, condition)
            if after is not None:
                query = query.where(_timeline_after(at, model.id, rank, after))
            for row in session.scalars(query.order_by(at, model.id).limit(limit + 1)):
                rows.append((getattr(row, at.key), rank, row.id, row))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        page, more = rows[:limit], len(rows) > limit
        items = _timeline_entries(session, actor, [r[3] for r in page], [r[1] for r in page])
        last = page[-1] if more else None
        return Page(items, encode_cursor(last[0], last[1], last[2]) if last else None)


def _timeline_after(at: Any, id_column: Any, rank: int, after: tuple) -> Any:
    after_at, after_rank, after_id = after
    if rank < after_rank:
        return at > after_at
    if rank > after_rank:
        return at >= after_at
    return or_(at > after_at, and_(at == after_at, id_column > after_id))


def _timeline_entries(
    session: Session, actor: Actor, rows: list[Any], ranks: list[int]
) -> list[TimelineEntry]:
    people = _user_refs(session, {getattr(r, "user_id", None) for r in rows})
    label_ids = {
        lid
        for r in rows
        if isinstance(r, CaseAction)
        for lid in (r.data.get("added", []) + r.data.get("removed", []))
    }
    labels = _label_refs(session, label_ids)
    entries = []
    for row, rank in zip(rows, ranks, strict=True):
        kind = _TIMELINE_SOURCES[rank]
        if kind == "incoming":
            entries.append(
                TimelineEntry(
                    kind, row.id, row.received_at, text=row.text, attachments=list(row.attachments)
                )
            )
        elif kind == "outgoing":
            entries.append(
                TimelineEntry(
                    kind,
                    row.id,
                    row.created_at,
                    text=row.text,
                    by=people.get(row.user_id),
                    delivery=row.delivery,
                )
            )
        else:
            details = dict(row.data)
            for key in ("added", "removed"):
                if key in details:
                    details[key] = [
                        labels.get(lid) for lid in details[key] if actor.sees_label(lid)
                    ]
            entries.append(
                TimelineEntry(
                    kind,
                    row.id,
                    row.created_at,
                    by=people.get(row.user_id) if row.user_id else None,
                    action=row.kind,
                    note=row.note,
                    details=details,
                )
            )
    return entries


def add_note(store: ServiceStore, actor: Actor, case_id: str, note: str) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id, Access.UPDATE)
        next_state(_state(case), "note")
        action = _record_action(session, case, "note", actor, at=utcnow(), note=note)
        _case_changed(case)
        _emit_case(uow, session, case, ev.CASE_NOTE_ADDED, note_id=action.id)
        _notify(session, case, "note", actor.user_id, _watchers(session, case.id))
        uow.commit()
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


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
        case, _ = _load_case(session, actor, case_id, Access.UPDATE)
        next_state(_state(case), "reassign")
        new_partner, new_user = _assignees(session, actor, partner or case.partner_id, user)
        if (new_partner.id, new_user.id if new_user else None) != (case.partner_id, case.user_id):
            case.partner_id = new_partner.id
            case.user_id = new_user.id if new_user else None
            _record_action(
                session,
                case,
                "reassign",
                actor,
                at=utcnow(),
                data=_assignment(new_partner, new_user),
            )
            _case_changed(case)
            _emit_case(
                uow,
                session,
                case,
                ev.CASE_REASSIGNED,
                assignee_partner=_person(new_partner),
                assignee_user=_person(new_user),
            )
            _drop_watchers_without_access(session, case)
            if new_user is not None:
                _watch(session, case.id, [new_user.id])
                _notify(session, case, "assigned", actor.user_id, [new_user.id])
            uow.commit()
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


def set_case_labels(
    store: ServiceStore, actor: Actor, case_id: str, label_ids: Sequence[str]
) -> CaseView:
    """Set the case's labels among those the actor sees; labels it does not see stay."""
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id, Access.UPDATE)
        next_state(_state(case), "label")
        _known_labels(session, actor, label_ids, "labels")
        current = _case_label_ids(session, case.id)
        hidden = {lid for lid in current if not actor.sees_label(lid)}
        wanted = hidden | set(label_ids)
        if wanted != current:
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
            _case_changed(case)
            _emit_case(uow, session, case, ev.CASE_LABELS_CHANGED, labels=sorted(wanted))
            _drop_watchers_without_access(session, case)
            uow.commit()
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


def reply_in_case(store: ServiceStore, actor: Actor, case_id: str, text: str) -> OutgoingView:
    with store.unit_of_work() as uow:
        session = uow.session
        org = _ensure_org(session, actor.org)
        case, _ = _load_case(session, actor, case_id, Access.UPDATE)
        next_state(_state(case), "reply")
        contact = session.get(Contact, case.contact_id)
        assert contact is not None
        latest = session.scalar(
            select(Message.id)
            .where(Message.case_id == case.id, Message.received_at.is_not(None))
            .order_by(Message.received_at.desc())
            .limit(1)
        )
        outgoing = _send(uow, actor, org, contact, text, case=case, reply_to=latest)
        _notify(session, case, "reply", actor.user_id, _watchers(session, case.id))
        uow.commit()
        return _outgoing_views(session, org, [outgoing])[0]


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
    return {"assignee_partner": _person(partner), "assignee_user": _person(user)}


def close_case(store: ServiceStore, actor: Actor, case_id: str, note: str) -> CaseView:
    """Close with a final note; case.closed says whether this is the first close (the org may
    start its follow-up flow only then)."""
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id, Access.UPDATE)
        next_state(_state(case), "close")
        now = utcnow()
        first = is_first_close(case.close_count)
        case.closed_on = now
        case.close_count += 1
        _record_action(session, case, "close", actor, at=now, note=note)
        _case_changed(case)
        _emit_case(
            uow,
            session,
            case,
            ev.CASE_CLOSED,
            **_assignee_refs(session, case),
            opened_on=(case.reopened_on or case.opened_on).isoformat(),
            closed_on=now.isoformat(),
            first_close=first,
        )
        _notify(session, case, "closed", actor.user_id, _watchers(session, case.id))
        uow.commit()
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


def reopen_case(
    store: ServiceStore, actor: Actor, case_id: str, note: str | None = None
) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id, Access.UPDATE)
        next_state(_state(case), "reopen")
        if _open_case_of(session, case.contact_id) is not None:
            raise Conflict("CONTACT_HAS_OPEN_CASE", "This contact has another open case.")
        now = utcnow()
        case.closed_on = None
        case.reopened_on = now
        try:
            session.flush()
        except IntegrityError as exc:
            raise Conflict("CONTACT_HAS_OPEN_CASE", "This contact has another open case.") from exc
        _record_action(session, case, "reopen", actor, at=now, note=note)
        _case_changed(case)
        _emit_case(
            uow,
            session,
            case,
            ev.CASE_REOPENED,
            **_assignee_refs(session, case),
            opened_on=now.isoformat(),
            archived_external_ids=[],
        )
        _watch(session, case.id, [actor.user_id])
        _notify(session, case, "reopened", actor.user_id, _watchers(session, case.id))
        uow.commit()
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


def watch_case(store: ServiceStore, actor: Actor, case_id: str, watching: bool) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = _load_case(session, actor, case_id)
        if watching:
            _watch(session, case.id, [actor.user_id])
        else:
            session.execute(
                delete(CaseWatcher).where(
                    CaseWatcher.case_id == case.id, CaseWatcher.user_id == actor.user_id
                )
            )
        uow.commit()
        return _case_views(session, actor, _ensure_org(session, actor.org), [case])[0]


# --- notifications ------------------------------------------------------------------------------
def _notification_visibility(actor: Actor) -> Any:
    """A notification shows only while its reader may read its case (checked again on every
    read: access can be lost after the notification was written)."""
    return exists().where(Case.id == Notification.case_id, _case_visibility(actor))


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
        page, next_cursor = _newest_first(
            session, Notification, Notification.created_at, conditions, cursor, limit
        )
        people = _user_refs(session, {n.actor_id for n in page})
        items = [
            NotificationView(
                n.id,
                n.kind,
                n.case_id,
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
        by = _user_refs(session, [notification.actor_id]).get(notification.actor_id or "")
        return NotificationView(
            notification.id,
            notification.kind,
            notification.case_id,
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

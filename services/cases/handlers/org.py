"""The org: bootstrap (first administrator), its settings (each change emits org.updated), and
the flow engine's groups and flows for the settings pickers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.cases.domain import (
    ADMINISTRATOR,
    Actor,
    Conflict,
    Invalid,
)
from services.cases.handlers.access import require_admin
from services.cases.handlers.changes import org_changed
from services.cases.handlers.people import new_token
from services.cases.handlers.rows import ensure_org
from services.cases.models import (
    Catalog,
    Org,
    User,
)
from services.cases.views import CatalogRef, CatalogView, OrgView
from shared.db import new_id
from shared.orgs import ORG_KEY_RULE, is_org_key
from shared.uow import ServiceStore


def bootstrap_org(
    store: ServiceStore, *, org: str, name: str, admin_email: str, admin_name: str | None = None
) -> tuple[str, str]:
    """Create an org (or adopt one events already created) and its first administrator.

    Returns (user id, token); the token is shown once. Refuses an org that has an administrator.
    """
    if not is_org_key(org):
        raise ValueError(ORG_KEY_RULE)
    with store.unit_of_work() as uow:
        session = uow.session
        row = ensure_org(session, org)
        has_admin = session.scalar(
            select(User.id).where(User.org == org, User.role == ADMINISTRATOR).limit(1)
        )
        if has_admin is not None:
            raise Conflict("ORG_EXISTS", f"org {org} already has an administrator")
        row.name = name
        org_changed(uow, row)
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
        token = new_token(session, user.id, "bootstrap")
        uow.commit()
    return user.id, token.token


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
        must_use_answers=org.must_use_answers,
        org_version=org.org_version,
    )


def get_org(store: ServiceStore, actor: Actor) -> OrgView:
    with store.unit_of_work() as uow:
        return _org_view(uow.session, ensure_org(uow.session, actor.org))


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
    "must_use_answers",
)


def update_org(store: ServiceStore, actor: Actor, changes: dict[str, Any]) -> OrgView:
    """Change the org's settings; each change emits org.updated with a higher org_version.

    Once the flow engine's catalog is known, groups and flows must be in it (and suspend groups
    must not be smart groups, which the engine computes and cannot change); before that any
    uuid is accepted.
    """
    require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        catalog = session.get(Catalog, org.key)
        if catalog is not None:
            _check_against_catalog(catalog, changes)
        changed = False
        for key in ORG_SETTINGS:
            if key in changes and getattr(org, key) != changes[key]:
                setattr(org, key, changes[key])
                changed = True
        if changed:
            org_changed(uow, org)
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
    require_admin(actor)
    with store.unit_of_work() as uow:
        catalog = uow.session.get(Catalog, actor.org)
        if catalog is None:
            return CatalogView([], [], None)
        return CatalogView(
            sorted(catalog.groups, key=lambda g: g["name"].lower()),
            sorted(catalog.flows, key=lambda f: f["name"].lower()),
            catalog.synced_on,
        )

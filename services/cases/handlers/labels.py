"""Labels and their rules (validated and described by the rule language, shared/rules.py);
each change emits a label event with a higher label_version; deleting a label takes it off every
message, case and partner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.cases import domain
from services.cases.domain import (
    Actor,
    Conflict,
    Invalid,
    NotFound,
)
from services.cases.handlers.access import require_admin
from services.cases.handlers.changes import apply_case_change, label_changed
from services.cases.handlers.counts import lock_label_messages, rebuild_counts
from services.cases.handlers.rows import case_label_ids, case_state, ensure_org, flush_unique
from services.cases.models import (
    Case,
    CaseLabel,
    Label,
    MessageLabel,
    PartnerLabel,
)
from services.cases.views import LabelView
from shared import events as ev
from shared.db import new_id, utcnow
from shared.rules import RuleError, describe_rule, parse_rule, rule_to_json
from shared.uow import ServiceStore


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


def load_label(session: Session, actor: Actor, label_id: str) -> Label:
    label = session.get(Label, label_id)
    if (
        label is None
        or label.org != actor.org
        or label.deleted_at is not None
        or not actor.sees_label(label.id)
    ):
        raise NotFound("label")
    return label


def known_labels(
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
        return _label_view(load_label(uow.session, actor, label_id))


def create_label(store: ServiceStore, actor: Actor, values: dict[str, Any]) -> LabelView:
    require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        ensure_org(session, actor.org)
        _check_label_name(session, actor.org, values["name"], None)
        label = Label(
            id=new_id(),
            org=actor.org,
            name=values["name"],
            description=values.get("description", ""),
            synced=values.get("synced", False),
            active=values.get("active", True),
            rule=_normalised_rule(values.get("rule", [])),
            label_version=0,
        )
        session.add(label)
        label_changed(uow, label, ev.LABEL_CREATED)  # version 1, before the row is inserted
        flush_unique(session, "LABEL_NAME_TAKEN", "A label of this org has that name.")
        uow.commit()
        return _label_view(label)


def update_label(
    store: ServiceStore, actor: Actor, label_id: str, changes: dict[str, Any]
) -> LabelView:
    with store.unit_of_work() as uow:
        session = uow.session
        label = load_label(session, actor, label_id)
        require_admin(actor)
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
            label_changed(uow, label, ev.LABEL_UPDATED)
            flush_unique(session, "LABEL_NAME_TAKEN", "A label of this org has that name.")
            uow.commit()
        return _label_view(label)


def delete_label(store: ServiceStore, actor: Actor, label_id: str) -> None:
    """Delete a label: it leaves every message, case and partner; a tombstone keeps its
    version so the label.deleted event outranks every earlier one."""
    with store.unit_of_work() as uow:
        session = uow.session
        label = load_label(session, actor, label_id)
        require_admin(actor)
        label.deleted_at = utcnow()
        affected = session.scalars(
            select(Case)
            .join(CaseLabel, CaseLabel.case_id == Case.id)
            .where(CaseLabel.label_id == label.id)
        ).all()
        lock_label_messages(session, label.id)  # changes of them meanwhile wait for this one
        session.execute(delete(MessageLabel).where(MessageLabel.label_id == label.id))
        session.execute(delete(CaseLabel).where(CaseLabel.label_id == label.id))
        session.execute(delete(PartnerLabel).where(PartnerLabel.label_id == label.id))
        for case in affected:  # the label left them: a change of their labels like any other
            remaining = case_label_ids(session, case.id)
            change = domain.relabel(case_state(case), remaining | {label.id}, remaining)
            assert change is not None
            apply_case_change(uow, session, case, change)
        label_changed(uow, label, ev.LABEL_DELETED)
        # The label left the sets of all its messages: their counts are recounted (last, so
        # that the counts are locked only for the rest of this transaction).
        rebuild_counts(session, label.org)
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

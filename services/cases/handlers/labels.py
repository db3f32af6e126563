"""Labels and their rules (validated and described by the rule language, shared/rules.py);
each change emits a label event with a higher label_version; deleting a label takes it off every
message, case, partner and ready-made answer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

import services.cases.handlers.statistics as statistics
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
    AnswerLabel,
    Case,
    CaseLabel,
    Contact,
    Label,
    Message,
    MessageLabel,
    PartnerLabel,
)
from services.cases.views import LabelView, PreviewMatch, RulePreview
from shared import events as ev
from shared import rules
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
        statistics.label_deleted(session, label.org, label.id)
        session.execute(delete(CaseLabel).where(CaseLabel.label_id == label.id))
        session.execute(delete(PartnerLabel).where(PartnerLabel.label_id == label.id))
        session.execute(delete(AnswerLabel).where(AnswerLabel.label_id == label.id))
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


def preview_rule(
    store: ServiceStore, actor: Actor, rule: Any, *, examine: int = 500, show: int = 20
) -> RulePreview:
    """Which of the org's newest ``examine`` received messages (simulations left out) a rule
    would match, by the rule language itself. Cases keeps no contact groups, so group tests
    cannot be evaluated here: they are reported in ``unchecked`` and taken as passing (a rule of
    group tests only is not evaluated at all). Field tests read the contact's latest known
    fields, which may differ from those the message came with."""
    require_admin(actor)
    try:
        tests = parse_rule(rule)
    except RuleError as exc:
        raise Invalid({"rule": [str(exc)]}) from exc
    checked = tuple(t for t in tests if not isinstance(t, rules.GroupsTest))
    unchecked = sorted({t.type for t in tests} - {t.type for t in checked})
    fields_now = any(isinstance(t, rules.FieldTest) for t in checked)
    starts = rules.run_starts(checked)
    field_keys = {t.key for t in checked if isinstance(t, rules.FieldTest)}
    with store.unit_of_work() as uow:
        rows = uow.session.execute(
            select(Message, Contact.ref, Contact.fields)
            .join(Contact, Contact.id == Message.contact_id)
            .where(
                Message.org == actor.org,
                Message.received_at.is_not(None),
                Message.simulation.is_(False),
            )
            .order_by(Message.received_at.desc(), Message.id.desc())
            .limit(examine)
        ).all()
    matched: list[PreviewMatch] = []
    count = 0
    for message, ref, fields in rows:
        if not checked:
            break  # nothing to evaluate: an empty rule never matches, groups are unknown here
        facts = rules.MessageFacts.of(
            rules.Message(
                text=message.text,
                flow=message.flow_uuid,
                node=message.node_uuid,
                groups=frozenset(),
                fields={k: v for k, v in (fields or {}).items() if isinstance(v, str)},
            ),
            starts,
            field_keys,
        )
        if all(test.matches(facts) for test in checked):
            count += 1
            if len(matched) < show:
                matched.append(PreviewMatch(message.id, message.text, ref, message.received_at))
    return RulePreview(len(rows), count, matched, unchecked, fields_now)


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

"""The one idiom for changing a versioned row (an org, a label, a case): bump its version and emit
the event that carries the new version, in the unit of work's transaction.

Consumers keep only the newest version of what they were told (events may arrive out of order
across replicas), so a change that forgot its version, or its event, would silently diverge. No
handler bumps a version or emits an org, label or case event by hand: they call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from services.cases.domain import CaseChange
from services.cases.models import Case, Contact, Label, Message, Org
from shared import events as ev
from shared.uow import UnitOfWork

VERSION_OF: dict[type, str] = {Org: "org_version", Label: "label_version", Case: "case_version"}

CASE_EVENTS = {
    "opened": ev.CASE_OPENED,
    "note_added": ev.CASE_NOTE_ADDED,
    "reassigned": ev.CASE_REASSIGNED,
    "labels_changed": ev.CASE_LABELS_CHANGED,
    "summary_changed": ev.CASE_SUMMARY_CHANGED,
    "closed": ev.CASE_CLOSED,
    "reopened": ev.CASE_REOPENED,
}


def record_change(uow: UnitOfWork, row: Org | Label | Case, event: str, data: Mapping) -> None:
    """Bump the row's version and emit ``event`` with ``data`` and that version."""
    version = VERSION_OF[type(row)]
    setattr(row, version, getattr(row, version) + 1)
    org = row.key if isinstance(row, Org) else row.org
    uow.emit(event, org=org, data={**data, version: getattr(row, version)})


def org_changed(uow: UnitOfWork, org: Org) -> None:
    record_change(
        uow,
        org,
        ev.ORG_UPDATED,
        {
            "name": org.name,
            "timezone": org.timezone,
            "suspend_groups": list(org.suspend_groups),
            "followup_flow": org.followup_flow,
            "followup_every_close": org.followup_every_close,
            "interrupt_on_open": org.interrupt_on_open,
            "mirror_labels": org.mirror_labels,
            "mirror_archive": org.mirror_archive,
        },
    )


def label_changed(uow: UnitOfWork, label: Label, event: str) -> None:
    """label.created or label.updated, with what the labeler needs; label.deleted with the id
    alone (the tombstone keeps the version, which outranks every earlier event)."""
    if event == ev.LABEL_DELETED:
        record_change(uow, label, event, {"label_uuid": label.id})
        return
    record_change(
        uow,
        label,
        event,
        {
            "label_uuid": label.id,
            "name": label.name,
            "synced": label.synced,
            "active": label.active,
            "rule": list(label.rule),
        },
    )


def apply_case_change(
    uow: UnitOfWork, session: Session, case: Case, change: CaseChange, **context: Any
) -> None:
    """Apply what the domain decided: set the case's fields, bump its version and emit its
    event, which also carries ``context`` (assignees, archived messages: what the handler
    looked up)."""
    for name, value in change.sets.items():
        setattr(case, name, value)
    contact = session.get(Contact, case.contact_id)
    assert contact is not None
    data = {"case_id": case.id, "contact_uuid": contact.uuid, **change.data, **context}
    record_change(uow, case, CASE_EVENTS[change.what], data)


def mirror_archive(uow: UnitOfWork, org: Org, name: str, messages: Sequence[Message]) -> None:
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

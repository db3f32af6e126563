"""What flowbridge keeps in its own tables for the handlers to decide by: each org's policy, its
catalog of groups and flows (replaced, and announced with catalog.synced), and the newest version
of each case it has applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.flowbridge import domain
from services.flowbridge.flow_engine import Flow, Group
from services.flowbridge.models import CaseRecord, CatalogEntry, OrgSettings
from shared import events as ev
from shared.uow import UnitOfWork


def org_policy(session: Session, org: str) -> domain.OrgPolicy:
    row = session.get(OrgSettings, org)
    if row is None:
        return domain.OrgPolicy()
    return domain.OrgPolicy(
        suspend_groups=tuple(row.suspend_groups or ()),
        followup_flow=row.followup_flow,
        followup_every_close=row.followup_every_close,
        interrupt_on_open=row.interrupt_on_open,
        mirror_labels=row.mirror_labels,
        mirror_archive=row.mirror_archive,
    )


def smart_groups(session: Session, org: str) -> set[str]:
    return set(
        session.scalars(
            select(CatalogEntry.uuid).where(
                CatalogEntry.org == org, CatalogEntry.kind == "group", CatalogEntry.smart.is_(True)
            )
        )
    )


def case_version(session: Session, org: str, case_id: str) -> int | None:
    return session.scalar(
        select(CaseRecord.case_version).where(CaseRecord.org == org, CaseRecord.case_id == case_id)
    )


def record_case(session: Session, org: str, data: Mapping[str, Any], *, is_open: bool) -> None:
    row = session.get(CaseRecord, (org, data["case_id"]))
    if row is None:
        row = CaseRecord(org=org, case_id=data["case_id"])
        session.add(row)
    row.contact_uuid = data["contact_uuid"]
    row.case_version = data["case_version"]
    row.is_open = is_open


def record_catalog(
    uow: UnitOfWork, org: str, groups: Sequence[Group], flows: Sequence[Flow], now: datetime
) -> dict[str, Any]:
    """Replace the org's catalog and emit catalog.synced for the cases service."""
    session = uow.session
    session.execute(delete(CatalogEntry).where(CatalogEntry.org == org))
    live_flows = [flow for flow in flows if not flow.archived]
    session.add_all(
        [
            CatalogEntry(
                org=org, kind="group", uuid=g.uuid, name=g.name, smart=g.is_smart, synced_at=now
            )
            for g in groups
        ]
        + [
            CatalogEntry(org=org, kind="flow", uuid=f.uuid, name=f.name, smart=False, synced_at=now)
            for f in live_flows
        ]
    )
    data = {
        "groups": [{"uuid": g.uuid, "name": g.name, "smart": g.is_smart} for g in groups],
        "flows": [{"uuid": f.uuid, "name": f.name, "smart": False} for f in live_flows],
        "synced_on": now.isoformat(),
    }
    uow.emit(ev.CATALOG_SYNCED, org=org, data=data)
    return data

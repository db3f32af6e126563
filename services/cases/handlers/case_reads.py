"""Reading cases: the filtered case list, one case as its viewer sees it (access, warning,
watching), and the timeline of messages, replies and actions, oldest first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, true
from sqlalchemy.orm import Session

from services.cases.domain import (
    Access,
    Actor,
    case_access,
    decode_cursor,
    encode_cursor,
    needs_warning,
)
from services.cases.handlers.access import case_visibility, contact_id_of, load_case
from services.cases.handlers.contacts import contact_view
from services.cases.handlers.rows import case_state, ensure_org, label_refs, newest_first, user_refs
from services.cases.models import (
    Case,
    CaseAction,
    CaseLabel,
    CaseWatcher,
    Contact,
    Label,
    Message,
    Org,
    Outgoing,
    Partner,
)
from services.cases.views import CaseView, Page, Ref, TimelineEntry
from shared.db import utcnow
from shared.uow import ServiceStore


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
        conditions = case_conditions(
            session,
            actor,
            state=state,
            partner=partner,
            user=user,
            label=label,
            contact=contact,
            opened_after=opened_after,
            opened_before=opened_before,
        )
        if conditions is None:
            return Page([])
        page, next_cursor = newest_first(session, Case, Case.opened_on, conditions, cursor, limit)
        items = case_views(session, actor, ensure_org(session, actor.org), page)
        return Page(items, next_cursor)


def case_conditions(
    session: Session,
    actor: Actor,
    *,
    state: str | None = None,
    partner: str | None = None,
    user: str | None = None,
    label: str | None = None,
    contact: str | None = None,
    opened_after: datetime | None = None,
    opened_before: datetime | None = None,
) -> list[Any] | None:
    """The conditions on ``Case`` of the case list's filters, as the actor may see it; None when
    nothing can match. The case list and the cases export read the same rows with them."""
    conditions = [Case.org == actor.org, case_visibility(actor)]
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
            return None
        conditions.append(exists().where(CaseLabel.case_id == Case.id, CaseLabel.label_id == label))
    if contact is not None:
        conditions.append(Case.contact_id == contact_id_of(session, actor, contact))
    if opened_after is not None:
        conditions.append(Case.opened_on > opened_after)
    if opened_before is not None:
        conditions.append(Case.opened_on < opened_before)
    return conditions


def case_counts(store: ServiceStore, actor: Actor) -> dict[str, int]:
    """How many of the cases the actor sees are open and closed (one pass over the org's cases;
    the inbox shows them beside the folders)."""
    with store.unit_of_work() as uow:
        closed = Case.closed_on.is_not(None)
        row = uow.session.execute(
            select(
                func.count().filter(~closed).label("open"),
                func.count().filter(closed).label("closed"),
            ).where(Case.org == actor.org, case_visibility(actor))
        ).one()
        return {"open": row.open or 0, "closed": row.closed or 0}


def get_case(store: ServiceStore, actor: Actor, case_id: str) -> CaseView:
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id)
        return case_views(session, actor, ensure_org(session, actor.org), [case])[0]


def case_views(session: Session, actor: Actor, org: Org, cases: Sequence[Case]) -> list[CaseView]:
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
    people = user_refs(session, {c.user_id for c in cases} | {c.opened_by for c in cases})
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
        state = case_state(case)
        access = case_access(actor, case.partner_id, all_labels[case.id])
        views.append(
            CaseView(
                id=case.id,
                contact=contact_view(contacts[case.contact_id], org),
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


def case_timeline(
    store: ServiceStore, actor: Actor, case_id: str, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """Messages in and out and actions, oldest first, paged on (time, kind, id)."""
    after = decode_cursor(cursor, datetime, int, str) if cursor else None
    with store.unit_of_work() as uow:
        session = uow.session
        case, _ = load_case(session, actor, case_id)
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
    people = user_refs(session, {getattr(r, "user_id", None) for r in rows})
    label_ids = {
        lid
        for r in rows
        if isinstance(r, CaseAction)
        for lid in (r.data.get("added", []) + r.data.get("removed", []))
    }
    labels = label_refs(session, label_ids)
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

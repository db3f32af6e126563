"""What can be exported, in one registry (``KINDS``): each kind names its filters (a strict
schema, the same filters as its listing in the API), its columns, and how its rows are read:
in batches, newest first, keyset-paged on (time, id), through the same visibility conditions
as the listing (handlers/inbox.py, handlers/case_reads.py), so that an export holds exactly
what its requester could page through.

A contact is its pseudonymous reference only: never the org's display field (it may be a
name or a phone number), never a URN. Adding a kind is adding one ``ExportKind`` to ``KINDS``.

The request body's schema (``ExportSchema``) lives here, beside the registry it validates
against, rather than in services/cases/schemas.py, whose fields the filter schemas reuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from services.cases import stats
from services.cases.domain import FOLDERS, MANAGER, Actor, Forbidden
from services.cases.export_files import FORMATS
from services.cases.handlers import stat_reads
from services.cases.handlers.access import require_admin
from services.cases.handlers.case_reads import case_conditions
from services.cases.handlers.inbox import message_conditions, sent_conditions
from services.cases.models import (
    Case,
    CaseLabel,
    Contact,
    Label,
    Message,
    MessageLabel,
    Outgoing,
    Partner,
    User,
)
from services.cases.schemas import ActivityQuery, CaseFilter, Id, Text, When, _Strict


# --- filters ------------------------------------------------------------------------------------
class MessageFilters(_Strict):
    """GET /messages's filters (the sent folder is the replies export)."""

    folder = fields.String(
        load_default="inbox", validate=validate.OneOf([f for f in FOLDERS if f != "sent"])
    )
    label = Id()
    contact = Text(validate=validate.Length(max=20))
    q = Text(validate=validate.Length(max=200))
    after = When()
    before = When()
    simulation = fields.Boolean(load_default=False)


CaseFilters = CaseFilter  # GET /cases's filters


class ReplyFilters(_Strict):
    """The sent folder's filters: the replies written after / before, to a contact, a text, by
    one partner (a partner's statistics page; a partner's users see their own partner's only)."""

    partner = Id()
    contact = Text(validate=validate.Length(max=20))
    q = Text(validate=validate.Length(max=200))
    after = When()
    before = When()


# --- rows ---------------------------------------------------------------------------------------
Batch = list[list[Any]]
# (session, actor, loaded filters, the last row's key or None, how many) -> rows and their keys
Reader = Callable[[Session, Actor, dict[str, Any], Any, int], tuple[Batch, Any]]


def _anyone(actor: Actor, filters: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class ExportKind:
    name: str
    filters: type[Schema]
    columns: tuple[str, ...]
    read: Reader  # one batch of rows after a key, and the key of its last row
    count: Callable[[Session, Actor, dict[str, Any]], int]
    # Raises Forbidden when the actor may not ask for these filters at all (checked on request).
    check: Callable[[Actor, dict[str, Any]], None] = _anyone


def _after(at: Any, id_column: Any, key: tuple[datetime, str] | None) -> list[Any]:
    """Newest first, the rows after the last one written. ``at <= last_at`` says the same as
    the second condition, but is one an index can start its scan from: without it each batch
    scanned every row before the key again (measured: 200,000 messages, CSV: 29 s, then 12)."""
    if key is None:
        return []
    last_at, last_id = key
    return [at <= last_at, or_(at < last_at, and_(at == last_at, id_column < last_id))]


def _count(session: Session, model: Any, conditions: list[Any] | None) -> int:
    if conditions is None:
        return 0
    return session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0


def label_ids_of(session: Session, link: Any, owner: Any, row_owner: Any) -> Any:
    """A column of the row's label ids, comma-separated, aggregated in the database (one
    query per batch rather than a second one naming thousands of ids)."""
    if session.get_bind().dialect.name == "postgresql":
        joined = func.string_agg(link.label_id, ",")
    else:
        joined = func.group_concat(link.label_id, ",")
    return select(joined).where(owner == row_owner).scalar_subquery().label("label_ids")


class LabelNames:
    """The names of the labels the actor sees, read once per batch; a row's, sorted, joined."""

    def __init__(self, session: Session, actor: Actor) -> None:
        rows = session.execute(select(Label.id, Label.name).where(Label.org == actor.org))
        self.names = {label_id: name for label_id, name in rows if actor.sees_label(label_id)}

    def of(self, label_ids: str | None) -> str:
        if not label_ids:
            return ""
        found = (self.names.get(label_id) for label_id in label_ids.split(","))
        return "; ".join(sorted(name for name in found if name is not None))


# messages
MESSAGE_COLUMNS = (
    "message",
    "received_at (UTC)",
    "contact",
    "text",
    "labels",
    "flagged",
    "archived",
    "case",
)


def message_row(row: Any, labels: str) -> list[Any]:
    """One message as a row: its id, time, contact reference, text, the labels the requester
    sees, its flags and its case."""
    return [
        row.id,
        row.received_at,
        row.ref,
        row.text or "",
        labels,
        row.flagged,
        row.archived,
        row.case_id or "",
    ]


def _check_folder(actor: Actor, filters: dict[str, Any]) -> None:
    if filters.get("folder") == "unlabelled":
        require_admin(actor)


def _message_conditions(session: Session, actor: Actor, filters: dict[str, Any]):
    values = dict(filters)
    values["text"] = values.pop("q", None)
    return message_conditions(session, actor, **values)


def read_messages(session, actor, filters, key, size) -> tuple[Batch, Any]:
    conditions = _message_conditions(session, actor, filters)
    if conditions is None:
        return [], None
    rows = session.execute(
        select(
            Message.id,
            Message.received_at,
            Contact.ref,
            Message.text,
            Message.flagged,
            Message.archived,
            Message.case_id,
            label_ids_of(session, MessageLabel, MessageLabel.message_id, Message.id),
        )
        .join(Contact, Contact.id == Message.contact_id)
        .where(*conditions, *_after(Message.received_at, Message.id, key))
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(size)
    ).all()
    labels = LabelNames(session, actor)
    last = (rows[-1].received_at, rows[-1].id) if rows else None
    return [message_row(r, labels.of(r.label_ids)) for r in rows], last


# cases
CASE_COLUMNS = (
    "case",
    "contact",
    "state",
    "partner",
    "user",
    "labels",
    "summary",
    "opened_on (UTC)",
    "reopened_on (UTC)",
    "closed_on (UTC)",
)


def case_row(row: Any, labels: str) -> list[Any]:
    return [
        row.id,
        row.ref,
        "open" if row.closed_on is None else "closed",
        row.partner_name,
        row.user_name or "",
        labels,
        row.summary,
        row.opened_on,
        row.reopened_on,
        row.closed_on,
    ]


def _case_conditions(session, actor, filters):
    return case_conditions(session, actor, **filters)


def read_cases(session, actor, filters, key, size) -> tuple[Batch, Any]:
    conditions = _case_conditions(session, actor, filters)
    if conditions is None:
        return [], None
    rows = session.execute(
        select(
            Case.id,
            Contact.ref,
            Case.closed_on,
            Partner.name.label("partner_name"),
            User.name.label("user_name"),
            Case.summary,
            Case.opened_on,
            Case.reopened_on,
            label_ids_of(session, CaseLabel, CaseLabel.case_id, Case.id),
        )
        .join(Contact, Contact.id == Case.contact_id)
        .join(Partner, Partner.id == Case.partner_id)
        .outerjoin(User, User.id == Case.user_id)
        .where(*conditions, *_after(Case.opened_on, Case.id, key))
        .order_by(Case.opened_on.desc(), Case.id.desc())
        .limit(size)
    ).all()
    labels = LabelNames(session, actor)
    last = (rows[-1].opened_on, rows[-1].id) if rows else None
    return [case_row(r, labels.of(r.label_ids)) for r in rows], last


# replies
REPLY_COLUMNS = (
    "reply",
    "sent_at (UTC)",
    "by",
    "partner",
    "contact",
    "in_case",
    "case",
    "replied_message",
    "message_received_at (UTC)",
    "delay_seconds",
    "delivery",
    "delivered_at (UTC)",
)


def delay_seconds(received_at: datetime | None, replied_at: datetime) -> int | None:
    """How long the contact waited for this reply, in whole seconds (None: no message known)."""
    if received_at is None:
        return None
    return int((replied_at - received_at).total_seconds())


def reply_row(row: Any) -> list[Any]:
    return [
        row.id,
        row.created_at,
        row.user_name or "",
        row.partner_name or "",
        row.ref,
        row.case_id is not None,
        row.case_id or "",
        row.reply_to or "",
        row.received_at,
        delay_seconds(row.received_at, row.created_at),
        row.delivery,
        row.sent_on,
    ]


def _reply_conditions(session, actor, filters):
    values = dict(filters)
    values["text"] = values.pop("q", None)
    partner = values.pop("partner", None)
    conditions = sent_conditions(session, actor, **values)
    return conditions + ([Outgoing.partner_id == partner] if partner else [])


def read_replies(session, actor, filters, key, size) -> tuple[Batch, Any]:
    replied = aliased(Message)
    rows = session.execute(
        select(
            Outgoing.id,
            Outgoing.created_at,
            User.name.label("user_name"),
            Partner.name.label("partner_name"),
            Contact.ref,
            Outgoing.case_id,
            Outgoing.reply_to,
            replied.received_at,
            Outgoing.delivery,
            Outgoing.sent_on,
        )
        .join(Contact, Contact.id == Outgoing.contact_id)
        .join(User, User.id == Outgoing.user_id)
        .outerjoin(Partner, Partner.id == Outgoing.partner_id)
        .outerjoin(replied, replied.id == Outgoing.reply_to)
        .where(
            *_reply_conditions(session, actor, filters),
            *_after(Outgoing.created_at, Outgoing.id, key),
        )
        .order_by(Outgoing.created_at.desc(), Outgoing.id.desc())
        .limit(size)
    ).all()
    last = (rows[-1].created_at, rows[-1].id) if rows else None
    return [reply_row(r) for r in rows], last


# statistics: the daily counts of one scope, and agent activity
class DailyFilters(_Strict):
    """A scope's daily counts over a range of the org's days (the last 30 by default)."""

    scope = fields.String(
        load_default="org", validate=validate.OneOf(("org", "partner", "user", "label"))
    )
    id = Id()
    start = fields.Date(data_key="from")
    end = fields.Date(data_key="to")


ActivityFilters = ActivityQuery  # the agent activity page's range and partner


DAILY_COLUMNS = ("day", "metric", "count", "average_seconds")
ACTIVITY_COLUMNS = (
    "user",
    "partner",
    "replies",
    "cases_opened",
    "cases_closed",
    "reassigned",
    "notes",
    "first_reply_median_seconds",
    "first_reply_p90_seconds",
    "last_active (UTC)",
)


def read_daily(session, actor, filters, key, size) -> tuple[Batch, Any]:
    rows = stat_reads.daily_rows(
        session,
        actor,
        filters["scope"],
        filters.get("id"),
        filters.get("start"),
        filters.get("end"),
        tuple(key) if key else None,
        size,
    )
    batch = [
        [day, metric, n, round(seconds / n) if metric in stats.DURATIONS and n else ""]
        for day, metric, n, seconds in rows
    ]
    return batch, ((rows[-1][0], rows[-1][1]) if rows else None)


def read_activity(session, actor, filters, key, size) -> tuple[Batch, Any]:
    """A few hundred rows at most: all of them in the first batch."""
    if key is not None:
        return [], None
    rows = stat_reads.activity_rows(
        session,
        actor,
        first=filters.get("start"),
        last=filters.get("end"),
        partner=filters.get("partner"),
    )
    batch = [
        [
            row.user.name,
            row.partner.name if row.partner else "",
            row.replies,
            row.cases_opened,
            row.cases_closed,
            row.reassigned,
            row.notes,
            "" if row.first_reply_median_seconds is None else row.first_reply_median_seconds,
            "" if row.first_reply_p90_seconds is None else row.first_reply_p90_seconds,
            row.last_active or "",
        ]
        for row in rows
    ]
    return batch, ("done" if batch else None)


def _check_daily(actor: Actor, filters: dict[str, Any]) -> None:
    if filters.get("scope", "org") == "org":
        require_admin(actor)


def _check_activity(actor: Actor, filters: dict[str, Any]) -> None:
    if not actor.is_admin and actor.role != MANAGER:
        raise Forbidden("Only administrators and partner managers read agent activity.")


KINDS: dict[str, ExportKind] = {
    kind.name: kind
    for kind in (
        ExportKind(
            "messages",
            MessageFilters,
            MESSAGE_COLUMNS,
            read_messages,
            lambda s, a, f: _count(s, Message, _message_conditions(s, a, f)),
            _check_folder,
        ),
        ExportKind(
            "cases",
            CaseFilters,
            CASE_COLUMNS,
            read_cases,
            lambda s, a, f: _count(s, Case, _case_conditions(s, a, f)),
        ),
        ExportKind(
            "replies",
            ReplyFilters,
            REPLY_COLUMNS,
            read_replies,
            lambda s, a, f: _count(s, Outgoing, _reply_conditions(s, a, f)),
        ),
        ExportKind(
            "daily", DailyFilters, DAILY_COLUMNS, read_daily, lambda s, a, f: 0, _check_daily
        ),
        ExportKind(
            "activity",
            ActivityFilters,
            ACTIVITY_COLUMNS,
            read_activity,
            lambda s, a, f: 0,
            _check_activity,
        ),
    )
}


def load_filters(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
    """An export's stored filters, typed again (times as datetimes) for its reader."""
    return KINDS[kind].filters().load(stored)


# --- the request body ---------------------------------------------------------------------------
class ExportSchema(_Strict):
    """POST /exports: a kind, a format, and the kind's filters (checked with its schema)."""

    kind = fields.String(required=True, validate=validate.OneOf(tuple(KINDS)))
    format = fields.String(required=True, validate=validate.OneOf(FORMATS))
    filters = fields.Dict(keys=fields.String(), load_default=dict)

    @validates_schema
    def _filters_of_the_kind(self, data: dict[str, Any], **kwargs: Any) -> None:
        kind = KINDS.get(data.get("kind", ""))
        if kind is not None:
            try:
                kind.filters().load(data.get("filters", {}))
            except ValidationError as exc:
                raise ValidationError(exc.messages, "filters") from exc


def stored_filters(kind: str, given: dict[str, Any]) -> dict[str, Any]:
    """The filters as the export's row keeps them: validated, defaults filled, JSON-ready."""
    schema = KINDS[kind].filters()
    return schema.dump(schema.load(given))

"""The event catalogue: names, the envelope every event travels in, and one schema per event.

Writers are strict (an unknown or missing field is a bug in the producer and raises), readers
are tolerant (unknown keys are ignored, so a producer can add a field before consumers know it).
Events carry ids and the few fields consumers need, never whole objects, never a URN.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from shared.db import new_id, utcnow
from shared.quickload import quick_dump, quick_load

# --- names: <aggregate>.<past-tense verb>; the routing key is the name ---------------------------
MESSAGE_RECEIVED = "message.received"
MESSAGE_LABELED = "message.labeled"
LABEL_CREATED = "label.created"
LABEL_UPDATED = "label.updated"
LABEL_DELETED = "label.deleted"
ORG_UPDATED = "org.updated"
CASE_OPENED = "case.opened"
CASE_REASSIGNED = "case.reassigned"
CASE_NOTE_ADDED = "case.note_added"
CASE_LABELS_CHANGED = "case.labels_changed"
CASE_SUMMARY_CHANGED = "case.summary_changed"
CASE_CLOSED = "case.closed"
CASE_REOPENED = "case.reopened"
OUTGOING_REQUESTED = "outgoing.requested"
OUTGOING_SENT = "outgoing.sent"
OUTGOING_FAILED = "outgoing.failed"
MESSAGE_ARCHIVED = "message.archived"
MESSAGE_RESTORED = "message.restored"
CONTACT_SUSPENDED = "contact.suspended"
CONTACT_RESTORED = "contact.restored"
FOLLOWUP_STARTED = "followup.started"
CATALOG_SYNCED = "catalog.synced"
EXPORT_REQUESTED = "export.requested"


class BadEvent(ValueError):
    """An event that can never be handled (malformed envelope or data): dead-letter it."""


# --- data schemas ------------------------------------------------------------------------------
class _Data(Schema):
    """Base of every event's data schema."""

    VERSION = 1


def _uuid(**kw: Any) -> fields.Field:
    return fields.String(validate=validate.Length(min=1, max=64), **kw)


class GroupRef(Schema):
    uuid = _uuid(required=True)
    name = fields.String(allow_none=True, load_default=None)


class AttachmentRef(Schema):
    content_type = fields.String(allow_none=True, load_default=None)
    url = fields.String(required=True)


class ChannelRef(Schema):
    uuid = fields.String(allow_none=True, load_default=None)
    name = fields.String(allow_none=True, load_default=None)


class MessageReceived(_Data):
    message_id = _uuid(required=True)
    contact_uuid = _uuid(required=True)
    contact_groups = fields.List(fields.Nested(GroupRef), load_default=list)
    contact_fields = fields.Dict(
        keys=fields.String(), values=fields.String(allow_none=True), load_default=dict
    )
    language = fields.String(allow_none=True, load_default=None)
    flow_uuid = _uuid(required=True)
    flow_name = fields.String(allow_none=True, load_default=None)
    node_uuid = fields.String(allow_none=True, load_default=None)
    run_uuid = fields.String(allow_none=True, load_default=None)
    external_id = fields.String(allow_none=True, load_default=None)  # the engine's message uuid
    text = fields.String(allow_none=True, load_default=None)
    attachments = fields.List(fields.Nested(AttachmentRef), load_default=list)
    channel = fields.Nested(ChannelRef, allow_none=True, load_default=None)
    received_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    sent_on = fields.AwareDateTime(allow_none=True, load_default=None, default_timezone=UTC)
    simulation = fields.Boolean(load_default=False)


class MessageLabeled(_Data):
    message_id = _uuid(required=True)
    contact_uuid = _uuid(required=True)
    labels = fields.List(_uuid(), required=True)  # every label the message has now
    synced = fields.List(_uuid(), load_default=list)  # those of them mirrored into the engine
    external_id = fields.String(allow_none=True, load_default=None)
    simulation = fields.Boolean(load_default=False)


class LabelChanged(_Data):
    """label.created and label.updated: the whole definition, so the newest version wins."""

    label_uuid = _uuid(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    synced = fields.Boolean(required=True)
    active = fields.Boolean(required=True)
    rule = fields.List(fields.Dict(), required=True)
    label_version = fields.Integer(required=True, validate=validate.Range(min=1))


class LabelDeleted(_Data):
    label_uuid = _uuid(required=True)
    label_version = fields.Integer(required=True, validate=validate.Range(min=1))


class OrgUpdated(_Data):
    """An org's settings that other services act on. Never a secret: the flow engine's URL and
    token are configured in flowbridge itself."""

    name = fields.String(required=True)
    timezone = fields.String(required=True)
    suspend_groups = fields.List(_uuid(), load_default=list)
    followup_flow = fields.String(allow_none=True, load_default=None)
    followup_every_close = fields.Boolean(load_default=False)
    interrupt_on_open = fields.Boolean(load_default=False)
    mirror_labels = fields.Boolean(load_default=False)
    mirror_archive = fields.Boolean(load_default=False)
    org_version = fields.Integer(required=True, validate=validate.Range(min=1))


class PersonRef(Schema):
    id = _uuid(required=True)
    name = fields.String(required=True)


class CaseEvent(_Data):
    """Fields every case event carries: consumers converge on the highest case_version."""

    case_id = _uuid(required=True)
    case_version = fields.Integer(required=True, validate=validate.Range(min=1))
    contact_uuid = _uuid(required=True)


class CaseOpened(CaseEvent):
    """case.opened and case.reopened."""

    assignee_partner = fields.Nested(PersonRef, required=True)
    assignee_user = fields.Nested(PersonRef, allow_none=True, load_default=None)
    opened_on = fields.AwareDateTime(required=True, default_timezone=UTC)
    archived_external_ids = fields.List(fields.String(), load_default=list)


class CaseClosed(CaseEvent):
    assignee_partner = fields.Nested(PersonRef, required=True)
    assignee_user = fields.Nested(PersonRef, allow_none=True, load_default=None)
    opened_on = fields.AwareDateTime(required=True, default_timezone=UTC)
    closed_on = fields.AwareDateTime(required=True, default_timezone=UTC)
    first_close = fields.Boolean(required=True)


class CaseReassigned(CaseEvent):
    assignee_partner = fields.Nested(PersonRef, required=True)
    assignee_user = fields.Nested(PersonRef, allow_none=True, load_default=None)


class CaseNoteAdded(CaseEvent):
    note_id = _uuid(required=True)


class CaseLabelsChanged(CaseEvent):
    labels = fields.List(_uuid(), required=True)


class CaseSummaryChanged(CaseEvent):
    """The summary itself stays in the cases service: partners' words about a contact."""


class OutgoingRequested(_Data):
    outgoing_id = _uuid(required=True)
    contact_uuid = _uuid(required=True)
    text = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    case_id = fields.String(allow_none=True, load_default=None)
    reply_to = fields.String(allow_none=True, load_default=None)  # the source message id


class OutgoingSent(_Data):
    outgoing_id = _uuid(required=True)
    external_id = fields.Integer(allow_none=True, load_default=None)
    external_uuid = fields.String(allow_none=True, load_default=None)
    sent_on = fields.AwareDateTime(required=True, default_timezone=UTC)


class OutgoingFailed(_Data):
    outgoing_id = _uuid(required=True)
    reason = fields.String(required=True)


class MessagesArchived(_Data):
    """message.archived and message.restored, in batches, for orgs that mirror archiving."""

    message_ids = fields.List(_uuid(), required=True)
    external_ids = fields.List(fields.String(), load_default=list)


class ContactSuspended(CaseEvent):
    groups = fields.List(_uuid(), required=True)  # removed now, to be restored on close
    skipped = fields.List(_uuid(), load_default=list)  # smart groups, which cannot be changed
    reason = fields.String(allow_none=True, load_default=None)  # why nothing could be removed


class ContactRestored(CaseEvent):
    groups = fields.List(_uuid(), required=True)
    reason = fields.String(allow_none=True, load_default=None)  # why some were not restored


class FollowupStarted(_Data):
    case_id = _uuid(required=True)
    contact_uuid = _uuid(required=True)
    flow_uuid = _uuid(required=True)
    start_id = fields.String(allow_none=True, load_default=None)


class CatalogEntry(Schema):
    uuid = _uuid(required=True)
    name = fields.String(required=True)
    smart = fields.Boolean(load_default=False)


class CatalogSynced(_Data):
    """The org's groups and flows as the flow engine has them, for picking by name."""

    groups = fields.List(fields.Nested(CatalogEntry), required=True)
    flows = fields.List(fields.Nested(CatalogEntry), required=True)
    synced_on = fields.AwareDateTime(required=True, default_timezone=UTC)


class ExportRequested(_Data):
    """A user asked for an export: the cases worker builds its file. What to export (kind,
    filters) stays in the export's row; the event only names it."""

    export_id = _uuid(required=True)
    kind = fields.String(required=True, validate=validate.Length(min=1, max=32))
    format = fields.String(required=True, validate=validate.OneOf(("xlsx", "csv")))


SCHEMAS: dict[str, type[_Data]] = {
    MESSAGE_RECEIVED: MessageReceived,
    MESSAGE_LABELED: MessageLabeled,
    LABEL_CREATED: LabelChanged,
    LABEL_UPDATED: LabelChanged,
    LABEL_DELETED: LabelDeleted,
    ORG_UPDATED: OrgUpdated,
    CASE_OPENED: CaseOpened,
    CASE_REOPENED: CaseOpened,
    CASE_REASSIGNED: CaseReassigned,
    CASE_NOTE_ADDED: CaseNoteAdded,
    CASE_LABELS_CHANGED: CaseLabelsChanged,
    CASE_SUMMARY_CHANGED: CaseSummaryChanged,
    CASE_CLOSED: CaseClosed,
    OUTGOING_REQUESTED: OutgoingRequested,
    OUTGOING_SENT: OutgoingSent,
    OUTGOING_FAILED: OutgoingFailed,
    MESSAGE_ARCHIVED: MessagesArchived,
    MESSAGE_RESTORED: MessagesArchived,
    CONTACT_SUSPENDED: ContactSuspended,
    CONTACT_RESTORED: ContactRestored,
    FOLLOWUP_STARTED: FollowupStarted,
    CATALOG_SYNCED: CatalogSynced,
    EXPORT_REQUESTED: ExportRequested,
}


def may_mirror_labels(labeled: Mapping[str, Any]) -> bool:
    """Whether flowbridge may mirror a message.labeled's labels on the flow engine: not a
    simulation, the engine's message uuid known, a label synced with the engine among them."""
    return (
        not labeled.get("simulation")
        and bool(labeled.get("external_id"))
        and bool(labeled.get("synced"))
    )


# --- the envelope ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    id: str
    name: str
    version: int
    occurred_at: datetime
    org: str
    producer: str
    correlation_id: str
    causation_id: str | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The wire form. ``data`` is already JSON-ready (it went through the writer schema)."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
            "org": self.org,
            "producer": self.producer,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "data": dict(self.data),
        }

    def body(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def new_event(
    name: str,
    *,
    org: str,
    producer: str,
    data: Mapping[str, Any],
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """Build an event for the outbox; raises ValidationError if ``data`` breaks its schema."""
    schema_class = SCHEMAS.get(name)
    if schema_class is None:
        raise KeyError(f"no schema for event {name!r}")
    schema = _schema(schema_class, RAISE)
    loaded = quick_load(schema, dict(data))
    clean = quick_dump(schema, loaded) if loaded is not None else None
    if clean is None:  # marshmallow's to decide: the same data, or the ValidationError
        clean = schema.dump(schema.load(dict(data)))
    event_id = new_id()
    return Envelope(
        id=event_id,
        name=name,
        version=schema_class.VERSION,
        occurred_at=utcnow(),
        org=org,
        producer=producer,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id,
        data=clean,
    )


class _EnvelopeSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    id = _uuid(required=True)
    name = fields.String(required=True)
    version = fields.Integer(required=True)
    occurred_at = fields.AwareDateTime(required=True, default_timezone=UTC)
    org = fields.String(required=True, validate=validate.Length(min=1))
    producer = fields.String(required=True)
    correlation_id = fields.String(required=True)
    causation_id = fields.String(allow_none=True, load_default=None)
    data = fields.Dict(required=True)


@functools.cache
def _schema(schema_class: type[_Data], unknown: str) -> _Data:
    # Building a marshmallow schema costs more than using one; instances are reusable.
    return schema_class(unknown=unknown)


@functools.cache
def _envelope_schema() -> _EnvelopeSchema:
    return _EnvelopeSchema()


def read_event(body: Any) -> Envelope:
    """Parse a received event (bytes, str or dict); data comes back typed (datetimes...)."""
    try:
        if isinstance(body, bytes | str):
            body = json.loads(body)
        raw = quick_load(_envelope_schema(), body)
        if raw is None:  # marshmallow's to decide: the same envelope, or the worded error
            raw = _envelope_schema().load(body)
    except (ValueError, ValidationError) as exc:
        raise BadEvent(f"malformed envelope: {exc}") from exc
    schema_class = SCHEMAS.get(raw["name"])
    if schema_class is None:
        raise BadEvent(f"unknown event {raw['name']!r}")
    if raw["version"] > schema_class.VERSION:
        raise BadEvent(f"{raw['name']} version {raw['version']} is newer than this reader")
    schema = _schema(schema_class, EXCLUDE)
    try:
        data = quick_load(schema, raw["data"])
        if data is None:  # marshmallow's to decide: the same data, or the worded error
            data = schema.load(raw["data"])
    except ValidationError as exc:
        raise BadEvent(f"invalid {raw['name']} data: {exc.messages}") from exc
    return Envelope(**{**raw, "data": data})

"""The cases service's tables: orgs and their people, labels, the inbox's messages and replies,
cases with their timeline, notifications, exports, and the two ledgers (outbox, inbox).

Contacts are kept by their flow-engine uuid and a pseudonymous reference only: no URN, no name.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import JSONType, UTCDateTime, created_at, utc_datetime, uuid_pk
from shared.uow import ledgers, store_opener

SERVICE = "cases"
MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


def _where(condition: str) -> dict[str, Any]:
    """A partial index's condition, on both dialects."""
    return {"postgresql_where": text(condition), "sqlite_where": text(condition)}


# --- orgs and people ----------------------------------------------------------------------------
class Org(Base):
    """One flow-engine workspace, keyed like ingest's webhooks and every event's ``org``."""

    __tablename__ = "orgs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    suspend_groups: Mapped[list[str]] = mapped_column(JSONType, default=list)
    followup_flow: Mapped[str | None] = mapped_column(String(64), default=None)
    followup_every_close: Mapped[bool] = mapped_column(Boolean, default=False)
    interrupt_on_open: Mapped[bool] = mapped_column(Boolean, default=False)
    mirror_labels: Mapped[bool] = mapped_column(Boolean, default=False)
    mirror_archive: Mapped[bool] = mapped_column(Boolean, default=False)
    display_field: Mapped[str | None] = mapped_column(String(64), default=None)
    warning_days: Mapped[int | None] = mapped_column(Integer, default=7)
    # Partners (not administrators) must start each reply from a ready-made answer.
    must_use_answers: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Keys the contact pseudonyms: without it a reference cannot be traced back to a contact.
    pseudonym_salt: Mapped[str] = mapped_column(String(64))
    org_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[created_at]


class Catalog(Base):
    """The org's groups and flows as the flow engine last reported them (catalog.synced)."""

    __tablename__ = "catalogs"

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    groups: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    flows: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    synced_on: Mapped[utc_datetime]


class Partner(Base):
    __tablename__ = "partners"
    __table_args__ = (UniqueConstraint("org", "name", name="uq_partners_name"),)

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[created_at]


class PartnerLabel(Base):
    """The labels a restricted partner sees."""

    __tablename__ = "partner_labels"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    label_id: Mapped[str] = mapped_column(ForeignKey("labels.id"), primary_key=True)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("org", "email", name="uq_users_email"),)

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    email: Mapped[str] = mapped_column(String(254))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[created_at]
    # Signing in to the web pages: a scrypt hash (None until the user sets a password), and a
    # number that every session carries: bumping it (deactivation, a new password) ends them.
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    language: Mapped[str | None] = mapped_column(String(8), default=None)  # None: the browser's


class SignInLink(Base):
    """A one-time, expiring link to set a password (an invitation or a reset): only its hash is
    kept; the link itself is shown once to whoever made it."""

    __tablename__ = "sign_in_links"

    id: Mapped[uuid_pk]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))  # invite, reset
    created_at: Mapped[created_at]
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class SignInFailure(Base):
    """Failed sign-ins counted per key (an account or an address) in a fixed window."""

    __tablename__ = "sign_in_failures"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())


class Token(Base):
    """An API token of a user; only its hash is kept, the token itself is shown once."""

    __tablename__ = "tokens"

    id: Mapped[uuid_pk]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[created_at]
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# --- labels -------------------------------------------------------------------------------------
class Label(Base):
    """A label and its rule (JSON, as the labeler's parse_rule reads it). Deleted labels stay as
    tombstones so that their label_version keeps growing."""

    __tablename__ = "labels"
    __table_args__ = (
        Index("uq_labels_name", "org", "name", unique=True, **_where("deleted_at IS NULL")),
    )

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    synced: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    rule: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    label_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[created_at]
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# --- ready-made answers ------------------------------------------------------------------------
class Answer(Base):
    """A ready-made answer of the org (an FAQ, a canned response): a question, the answer's text
    and, optionally, the language they are written in; translations beside it."""

    __tablename__ = "answers"
    __table_args__ = (Index("ix_answers_org", "org", "question"),)

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    question: Mapped[str] = mapped_column(String(500))
    answer: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[created_at]


class AnswerLabel(Base):
    """The labels of an answer: a restricted partner sees answers with none or one of its own."""

    __tablename__ = "answer_labels"
    __table_args__ = (Index("ix_answer_labels_label", "label_id", "answer_id"),)

    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), primary_key=True)
    label_id: Mapped[str] = mapped_column(ForeignKey("labels.id"), primary_key=True)


class AnswerTranslation(Base):
    """An answer's question and text in one more language."""

    __tablename__ = "answer_translations"

    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(16), primary_key=True)
    question: Mapped[str] = mapped_column(String(500))
    answer: Mapped[str] = mapped_column(Text)


# --- contacts and messages ----------------------------------------------------------------------
class Contact(Base):
    """A contact as partners know it: a pseudonymous reference, plus the contact fields of its
    newest message (only the one the org chose is ever shown)."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("org", "uuid", name="uq_contacts_uuid"),
        UniqueConstraint("org", "ref", name="uq_contacts_ref"),
    )

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    uuid: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str] = mapped_column(String(16))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    fields_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The flow engine's language of the contact (ISO 639-3, e.g. "por"), from its newest message.
    language: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[created_at]


class Message(Base):
    """An incoming message. Built from message.received and message.labeled, whichever comes
    first; ``received_at`` is unset until message.received arrived."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_folder", "org", "archived", "received_at", "id"),
        Index("ix_messages_flagged", "org", "received_at", "id", **_where("flagged")),
        Index("ix_messages_contact", "contact_id", "received_at"),
        # The text search's trigrams (PostgreSQL's pg_trgm; migration 0010). Not on SQLite.
        Index(
            "ix_messages_text_trgm",
            "text",
            postgresql_using="gin",
            postgresql_ops={"text": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"))
    external_id: Mapped[str | None] = mapped_column(String(64), default=None)
    text: Mapped[str | None] = mapped_column(Text, default=None)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    flow_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    flow_name: Mapped[str | None] = mapped_column(Text, default=None)
    node_uuid: Mapped[str | None] = mapped_column(String(64), default=None)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    labelled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The labeler's newest opinion and when it was formed: message.labeled may come out of order.
    labeler_labels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    labeler_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    simulation: Mapped[bool] = mapped_column(Boolean, default=False)
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), index=True, default=None)
    locked_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[created_at]


class MessageLabel(Base):
    __tablename__ = "message_labels"
    __table_args__ = (Index("ix_message_labels_label", "label_id", "message_id"),)

    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), primary_key=True)
    label_id: Mapped[str] = mapped_column(ForeignKey("labels.id"), primary_key=True)


class MessageSetCount(Base):
    """How many received messages of an org look alike to every reader: the same labels
    (``label_set``, keyed by its hash), archived, flagged, simulation. Kept by the handlers in
    the transaction of each change (handlers/counts.py) and read by the folder counts, which
    then never scan the messages. ``n`` may be 0 (a row is not deleted when it empties)."""

    __tablename__ = "message_set_counts"

    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"), primary_key=True)
    label_hash: Mapped[str] = mapped_column(String(32), primary_key=True)
    archived: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    flagged: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    simulation: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    label_set: Mapped[str] = mapped_column(Text)
    n: Mapped[int] = mapped_column(Integer)


class MessageAction(Base):
    """A message's history: who did what, when (``user_id`` None: the system did)."""

    __tablename__ = "message_actions"
    __table_args__ = (Index("ix_message_actions_message", "message_id", "created_at"),)

    id: Mapped[uuid_pk]
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    action: Mapped[str] = mapped_column(String(16))
    label_id: Mapped[str | None] = mapped_column(String(36), default=None)
    outgoing_id: Mapped[str | None] = mapped_column(String(36), default=None)
    case_id: Mapped[str | None] = mapped_column(String(36), default=None)
    created_at: Mapped[created_at]


class Outgoing(Base):
    """A reply to a contact, delivered by flowbridge (outgoing.requested -> sent / failed)."""

    __tablename__ = "outgoing"
    __table_args__ = (
        Index("ix_outgoing_sent", "org", "created_at", "id"),
        # A partner's sent folder and its count.
        Index("ix_outgoing_partner", "org", "partner_id", "created_at", "id"),
        Index("ix_outgoing_case", "case_id", "created_at"),
    )

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"))
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), default=None)
    reply_to: Mapped[str | None] = mapped_column(String(64), default=None)
    partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"), default=None)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    # The ready-made answer the reply started from (no foreign key: answers may be deleted).
    answer_id: Mapped[str | None] = mapped_column(String(36), default=None)
    delivery: Mapped[str] = mapped_column(String(16), default="pending")
    failure: Mapped[str | None] = mapped_column(Text, default=None)
    sent_on: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[created_at]


# --- cases --------------------------------------------------------------------------------------
class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        # One open case per contact, also when two people open one at the same moment.
        Index("uq_cases_open_contact", "contact_id", unique=True, **_where("closed_on IS NULL")),
        Index("ix_cases_org", "org", "opened_on", "id"),
        Index("ix_cases_partner", "partner_id", "opened_on"),
    )

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"))
    summary: Mapped[str] = mapped_column(Text)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    opened_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    initial_message_id: Mapped[str | None] = mapped_column(String(64), default=None)
    opened_on: Mapped[utc_datetime]
    reopened_on: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    closed_on: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    close_count: Mapped[int] = mapped_column(Integer, default=0)
    # The clock of its time measures (services/cases/stats.py: CaseClock), for statistics.
    stats_clock: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    case_version: Mapped[int] = mapped_column(Integer, default=1)


class CaseLabel(Base):
    __tablename__ = "case_labels"
    __table_args__ = (Index("ix_case_labels_label", "label_id", "case_id"),)

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    label_id: Mapped[str] = mapped_column(ForeignKey("labels.id"), primary_key=True)


class CaseAction(Base):
    """One entry of a case's timeline besides messages: open, note, reassign, label, close,
    reopen, and what flowbridge reported (suspended, restored, followup)."""

    __tablename__ = "case_actions"
    __table_args__ = (Index("ix_case_actions_case", "case_id", "created_at", "id"),)

    id: Mapped[uuid_pk]
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"))
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[created_at]


class CaseWatcher(Base):
    __tablename__ = "case_watchers"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)


class Notification(Base):
    """What a user is told: about a case (``case_id``), or that their export is ready
    (``export_id``, kind ``export_ready``)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user", "user_id", "created_at", "id"),)

    id: Mapped[uuid_pk]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id"), default=None)
    export_id: Mapped[str | None] = mapped_column(ForeignKey("exports.id"), default=None)
    kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), default=None)
    created_at: Mapped[created_at]
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# --- statistics (services/cases/stats.py decides what counts; handlers/statistics.py stores) -----
class StatFact(Base):
    """One thing counted, once: its key (``in:<message>``, ``re:<reply>``, ``op:<action>``...)
    is what makes counting idempotent. Durations keep their seconds, for medians."""

    __tablename__ = "stat_facts"
    __table_args__ = (
        # What the first-reply medians read (agent activity, a partner's figures) is in the index
        # itself on PostgreSQL: facts are never updated, so the scan need not visit the table.
        Index(
            "ix_stat_facts_metric",
            "org",
            "metric",
            "at",
            postgresql_include=["user_id", "partner_id", "seconds"],
        ),
        Index("ix_stat_facts_user", "org", "user_id", "at"),
    )

    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    seconds: Mapped[float | None] = mapped_column(Float, default=None)
    partner_id: Mapped[str | None] = mapped_column(String(36), default=None)
    user_id: Mapped[str | None] = mapped_column(String(36), default=None)
    labels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    org_wide: Mapped[bool] = mapped_column(Boolean, default=True)


class StatCount(Base):
    """Daily counts per org, partner, user or label (``scope_id`` "" for the org's own): how
    many facts of a metric fell on that day in the org's timezone, and their seconds."""

    __tablename__ = "stat_counts"
    # Every user's (or label's) counts over a range: agent activity, the top labels. On
    # PostgreSQL the index holds what they read, so that only rows changed since the last vacuum
    # send the scan to the table (an increment was never a HOT update anyway: bench/stats.py).
    __table_args__ = (
        Index(
            "ix_stat_counts_day",
            "org",
            "scope",
            "day",
            postgresql_include=["scope_id", "metric", "n"],
        ),
    )

    # In this order: one scope's days are together (a page reads one scope over a range).
    org: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    scope_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


# --- exports ------------------------------------------------------------------------------------
class Export(Base):
    """A file of messages, cases or replies that a user asked for (services/cases/handlers/
    exports.py): built by the cases worker, downloadable by its requester only, deleted after
    the retention period. ``attempt`` grows each time a worker (re)starts building it: a worker
    whose attempt is no longer the row's stops without writing."""

    __tablename__ = "exports"
    __table_args__ = (
        Index("ix_exports_user", "user_id", "created_at", "id"),
        Index("ix_exports_expiry", "state", "expires_at"),
    )

    id: Mapped[uuid_pk]
    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(32))  # messages, cases, replies
    format: Mapped[str] = mapped_column(String(8))  # xlsx, csv
    filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # queued, running, done, failed, expired (done, and its file deleted after the retention)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[int] = mapped_column(Integer, default=0)  # rows written so far
    total: Mapped[int | None] = mapped_column(Integer, default=None)
    file_name: Mapped[str | None] = mapped_column(String(255), default=None)  # in the export dir
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[created_at]
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


# --- imports ------------------------------------------------------------------------------------
class ImportLink(Base):
    """What an import (services/cases/handlers/importing.py) made of each thing it read: the
    thing's kind and id in its source (``casepro:<org id>``) and the row it became here. A run
    skips what has a link, so a second run changes nothing and an interrupted one resumes; the
    link of kind ``org`` marks the org as this source's import target."""

    __tablename__ = "import_links"

    org: Mapped[str] = mapped_column(ForeignKey("orgs.key"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_id: Mapped[str | None] = mapped_column(String(36))  # None: read and skipped
    created_at: Mapped[created_at]


Outbox, Inbox = ledgers(Base)
open_store = store_opener(SERVICE, Outbox, Inbox)

"""What the partner API shows: one frozen dataclass per answer's shape (their field names are
the JSON keys, and the OpenAPI document is derived from them). Partner-safe by construction: a
contact is its pseudonymous reference and the one field the org chose to show, never a URN."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


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
    language: str | None  # as the ready-made answers write it ("pt"), when the engine knows it


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
    must_use_answers: bool
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
    case: str | None  # the case it is about; None for an export's
    export: str | None  # the export that is ready (kind export_ready)
    by: Ref | None
    created_at: datetime
    read: bool


@dataclass(frozen=True)
class ExportView:
    """An export the caller asked for: its state (queued, running, done, failed, expired), how
    many rows are written (of ``total``, when known), and once done where to download it."""

    id: str
    kind: str
    format: str
    filters: dict[str, Any]
    state: str
    progress: int
    total: int | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None
    file: str | None  # the download's path while the file is there


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Counts:
    folders: dict[str, int]
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Marked:
    marked: int  # how many notifications this marked read


@dataclass(frozen=True)
class Status:
    status: str  # the probes: "ok" (alive), "ready" (the database answers)


@dataclass(frozen=True)
class SignInLinkView:
    """A one-time link to set a password, shown once: open ``path`` on the cases web address."""

    path: str
    purpose: str  # invite (no password yet) or reset
    expires_at: datetime


@dataclass(frozen=True)
class PreviewMatch:
    """A recent message a rule would match: its text, the contact's pseudonym and time only."""

    id: str
    text: str | None
    contact_ref: str
    received_at: datetime


@dataclass(frozen=True)
class RulePreview:
    """Which of the org's ``examined`` newest messages a rule matches (``shown``: the first few).
    ``unchecked``: test types the service cannot evaluate (it keeps no contact groups), taken as
    passing; ``fields_now``: field tests read the contact's latest known fields."""

    examined: int
    matched: int
    shown: list[PreviewMatch]
    unchecked: list[str]
    fields_now: bool


@dataclass(frozen=True)
class AnswerTextView:
    language: str | None
    question: str
    answer: str


@dataclass(frozen=True)
class AnswerView:
    """A ready-made answer: its default text (``language``: the one it is written in, None when
    unsaid), its labels (those the caller sees), its translations, and ``text``: the text in the
    language asked for (``?language=``), or the default text."""

    id: str
    question: str
    answer: str
    language: str | None
    labels: list[Ref]
    translations: list[AnswerTextView]
    text: AnswerTextView


@dataclass(frozen=True)
class AnswerImportView:
    imported: int
    answers: list[AnswerView]


# --- statistics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StatPeriod:
    start: date  # the first day of the period (a day, or a month's first day)
    counts: dict[str, int]  # metric -> how many


@dataclass(frozen=True)
class StatTotal:
    metric: str
    count: int
    average_seconds: int | None  # durations only, in whole seconds


@dataclass(frozen=True)
class StatsView:
    scope: str  # org, partner, user, label
    id: str | None
    name: str
    first: date
    last: date
    period: str  # day or month
    timezone: str
    totals: list[StatTotal]
    periods: list[StatPeriod]


@dataclass(frozen=True)
class TopLabel:
    label: Ref
    count: int


@dataclass(frozen=True)
class ActivityRow:
    user: Ref
    partner: Ref | None
    replies: int
    cases_opened: int
    cases_closed: int
    reassigned: int
    notes: int
    first_reply_median_seconds: int | None  # their partner's first replies they gave
    first_reply_p90_seconds: int | None
    last_active: datetime | None


@dataclass(frozen=True)
class ReplyDelay:
    """A partner's reply and how long after the message it answers it was written."""

    id: str
    at: datetime
    by: Ref | None
    case: str | None
    delay_seconds: int | None  # None: it answers no message in particular

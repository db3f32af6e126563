"""What an import reads from CasePro, as frozen records of plain values.

Both readers produce these records: ``source.CaseproDatabase`` from CasePro's PostgreSQL
database, ``migrate_files.MigrateExport`` from the two files of its ``tickets_migrate`` command.
``CaseproSource`` is what they share, so that the writer has one code path for either.

References between records are CasePro's integer ids (``Case.contact_id`` is a ``Contact.id``).
The files carry no ids but cases', so their reader numbers partners, users, labels and contacts
itself; such ids hold within one reading only (see migrate_files.py).

Contacts are read without their name and URNs: those columns are never selected, and the records
have no attribute for them. Times are timezone-aware, in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Role = Literal["administrator", "manager", "agent"]

# CasePro's role codes, in the order its get_role() checks them: a user in two of the tables has
# the first one's role. A = org administrators, M = editors (partner manager), Y = viewers
# (partner data analyst, which can do what a manager does but manage users: our agent).
ROLE_CODES: tuple[tuple[str, Role], ...] = (
    ("A", "administrator"),
    ("M", "manager"),
    ("Y", "agent"),
)

# cases_caseaction.action
ACTION_CODES = {
    "O": "open",
    "S": "summary updated",
    "N": "note added",
    "A": "reassigned",
    "L": "label added",
    "U": "label removed",
    "C": "closed",
    "R": "reopened",
}


def role_of(codes: Iterable[str]) -> Role | None:
    """The role of a user who is in the role tables named by ``codes`` (A, M, Y); None when in
    none of them (such a user cannot sign in to that org)."""
    held = set(codes)
    for code, role in ROLE_CODES:
        if code in held:
            return role
    return None


@dataclass(frozen=True, slots=True)
class FlowRef:
    uuid: str
    name: str


def parse_follow_up_flow(value: object) -> FlowRef | None:
    """``config.common.follow_up_flow``: a JSON-encoded string ``'{"uuid": .., "name": ..}'``
    (an object is taken as well). None when unset or not usable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, Mapping):
        return None
    uuid, name = value.get("uuid"), value.get("name")
    if not isinstance(uuid, str) or not uuid:
        return None
    return FlowRef(uuid=uuid, name=name if isinstance(name, str) else "")


@dataclass(frozen=True, slots=True)
class Org:
    id: int | None  # None when read from tickets_migrate files, which do not say it
    name: str
    subdomain: str | None
    timezone: str | None
    language: str | None
    is_active: bool
    follow_up_flow: FlowRef | None
    banner: str | None  # config.common.banner_text


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    uuid: str | None  # None: never synced with the flow engine; rules cannot name it by uuid
    name: str
    suspend_from: bool  # removed from a contact while a case of theirs is open
    is_active: bool
    is_dynamic: bool
    is_visible: bool  # shown to partner users


@dataclass(frozen=True, slots=True)
class Field:
    key: str
    label: str
    is_visible: bool
    is_active: bool


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str | None  # None when blank
    full_name: str
    is_active: bool
    role: Role
    partner_id: int | None
    must_use_faq: bool  # may reply only from a ready-made answer


@dataclass(frozen=True, slots=True)
class Partner:
    id: int
    name: str
    description: str
    is_restricted: bool  # sees only the labels in label_ids
    is_active: bool
    label_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Label:
    id: int
    uuid: str | None  # the flow engine's label, when synced
    name: str
    description: str
    is_active: bool
    is_synced: bool
    # The JSON of rules_rule.tests as stored (normally a list of CasePro tests; the raw text when
    # it is not JSON); None when the label has no rule. rules.translate_rule() reads it.
    rule_tests: Any
    watcher_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Faq:
    id: int
    question: str
    answer: str
    language: str | None  # ISO 639-3 ("por"); answers_domain.engine_language() makes it "pt"
    parent_id: int | None  # set on a translation: the FAQ it translates
    label_ids: tuple[int, ...]  # set on the parent; translations inherit them


@dataclass(frozen=True, slots=True)
class Contact:
    id: int
    uuid: str
    language: str | None
    fields: dict[str, str | None]
    group_ids: tuple[int, ...]
    is_blocked: bool
    is_stopped: bool
    is_active: bool
    is_stub: bool  # a placeholder CasePro had not yet fetched from the flow engine


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    backend_id: int  # the flow engine's message id
    contact_id: int
    type: str  # 'I' inbox, 'F' flow
    text: str
    created_on: datetime
    is_flagged: bool
    is_archived: bool
    is_active: bool  # False: deleted
    is_handled: bool  # False: CasePro never applied its rules to it
    case_id: int | None
    label_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Outgoing:
    id: int
    activity: str  # 'B' bulk reply, 'C' case reply, 'F' forward
    text: str
    contact_id: int | None  # None for a forward (sent to a URN, which is not read)
    reply_to_id: int | None
    case_id: int | None
    partner_id: int | None  # the sender's partner; None for an administrator
    created_by_id: int
    created_on: datetime


@dataclass(frozen=True, slots=True)
class Case:
    id: int
    contact_id: int
    assignee_id: int  # the partner
    user_assignee_id: int | None
    initial_message_id: int | None  # None: opened without a message
    summary: str
    opened_on: datetime
    closed_on: datetime | None  # None: open
    label_ids: tuple[int, ...]
    watcher_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CaseAction:
    id: int
    case_id: int
    action: str  # a key of ACTION_CODES
    created_by_id: int
    created_on: datetime
    assignee_id: int | None
    user_assignee_id: int | None
    label_id: int | None
    note: str | None


KINDS = (
    "groups",
    "fields",
    "users",
    "partners",
    "labels",
    "faqs",
    "contacts",
    "messages",
    "outgoing",
    "cases",
    "actions",
)


class CaseproSource(Protocol):
    """What the writer reads an org from. The five big kinds are streamed in id order, each
    from ``after_id`` on, so that an import cut short resumes where it stopped."""

    org: Org

    def counts(self) -> dict[str, int]: ...  # rows per kind of KINDS

    def notes(self) -> list[str]: ...  # what the source could not say, for the import's report

    def groups(self) -> list[Group]: ...

    def fields(self) -> list[Field]: ...

    def users(self) -> list[User]: ...

    def partners(self) -> list[Partner]: ...

    def labels(self) -> list[Label]: ...

    def faqs(self) -> list[Faq]: ...

    def contacts(self, after_id: int = 0) -> Iterator[Contact]: ...

    def messages(self, after_id: int = 0) -> Iterator[Message]: ...

    def outgoing(self, after_id: int = 0) -> Iterator[Outgoing]: ...

    def cases(self, after_id: int = 0) -> Iterator[Case]: ...

    def actions(self, after_id: int = 0) -> Iterator[CaseAction]: ...

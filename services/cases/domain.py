"""Pure rules of the cases service: who sees what, the case state machine, contact pseudonyms,
soft locks, long-open warnings and list cursors. No Flask, no SQLAlchemy, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# --- errors the service layer raises; the HTTP edge maps them to statuses ----------------------


class CasesError(Exception):
    """Base of the errors a command fails with."""


class NotFound(CasesError):
    """The object does not exist, or the caller may not see it: the two are never told apart."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"No such {kind}.")
        self.kind = kind


class Forbidden(CasesError):
    """The caller sees the object but their role may not do this to it."""

    def __init__(self, message: str = "Your role does not allow this.") -> None:
        super().__init__(message)


class Conflict(CasesError):
    """The object's current state does not allow the command (closing a closed case...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Invalid(CasesError):
    """A well-formed request that names things which do not fit (unknown label, smart group)."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("Some fields are invalid.")
        self.fields = fields


class Refused(CasesError):
    """A well-formed request the org's rules refuse as it stands (a partner's reply that does not
    say which ready-made answer it started from, when the org requires one): a 400 with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TooManyAttempts(CasesError):
    """Too many failed sign-ins for this account or address: wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed attempts.")
        self.retry_after = retry_after


# --- people and access --------------------------------------------------------------------------

ADMINISTRATOR = "administrator"
MANAGER = "manager"
AGENT = "agent"
ROLES = (ADMINISTRATOR, MANAGER, AGENT)


class Access(enum.IntEnum):
    NONE = 0
    READ = 1
    UPDATE = 2


@dataclass(frozen=True)
class Actor:
    """The authenticated caller, with everything the visibility rules need."""

    org: str
    user_id: str
    name: str
    role: str
    partner_id: str | None
    restricted: bool = False
    partner_labels: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return self.role == ADMINISTRATOR

    def sees_label(self, label_id: str) -> bool:
        if self.is_admin or not self.restricted:
            return True
        return label_id in self.partner_labels

    def visible_labels(self, label_ids: Iterable[str]) -> set[str]:
        return {label for label in label_ids if self.sees_label(label)}


def can_see_message(actor: Actor, label_ids: Set[str], case_access: Access = Access.NONE) -> bool:
    """Administrators see every message of their org; a partner's users see a message that has
    a label their partner sees (any label when unrestricted), or that belongs to a case they
    can see."""
    if actor.is_admin or case_access > Access.NONE:
        return True
    return bool(actor.visible_labels(label_ids))


def case_access(actor: Actor, assignee_partner_id: str, label_ids: Set[str]) -> Access:
    """Administrators and the assigned partner work a case; other partners that see one of its
    labels may read it; everyone else does not know it exists."""
    if actor.is_admin or actor.partner_id == assignee_partner_id:
        return Access.UPDATE
    if label_ids and actor.visible_labels(label_ids):
        return Access.READ
    return Access.NONE


def can_manage_user(actor: Actor, user_partner_id: str | None, user_role: str) -> bool:
    """Administrators manage everyone; partner managers manage their own partner's users."""
    if actor.is_admin:
        return True
    return (
        actor.role == MANAGER
        and user_partner_id is not None
        and user_partner_id == actor.partner_id
        and user_role in (MANAGER, AGENT)
    )


def can_see_user(actor: Actor, user_id: str, user_partner_id: str | None) -> bool:
    if actor.is_admin or actor.user_id == user_id:
        return True
    return user_partner_id is not None and user_partner_id == actor.partner_id


# --- the case state machine ---------------------------------------------------------------------


class CaseState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


# (state, command) -> the state after it. A command not listed for a state is a conflict.
_TRANSITIONS: dict[tuple[CaseState, str], CaseState] = {
    (CaseState.OPEN, "close"): CaseState.CLOSED,
    (CaseState.CLOSED, "reopen"): CaseState.OPEN,
    (CaseState.OPEN, "reassign"): CaseState.OPEN,
    (CaseState.OPEN, "reply"): CaseState.OPEN,
    (CaseState.OPEN, "note"): CaseState.OPEN,
    (CaseState.CLOSED, "note"): CaseState.CLOSED,
    (CaseState.OPEN, "label"): CaseState.OPEN,
    (CaseState.CLOSED, "label"): CaseState.CLOSED,
    (CaseState.OPEN, "summarise"): CaseState.OPEN,
}

_CONFLICTS = {
    "close": ("CASE_ALREADY_CLOSED", "The case is already closed."),
    "reopen": ("CASE_ALREADY_OPEN", "The case is already open."),
}


def next_state(state: CaseState, command: str) -> CaseState:
    """The state a case is in after ``command``; raises Conflict if the command is not allowed."""
    after = _TRANSITIONS.get((state, command))
    if after is None:
        code, message = _CONFLICTS.get(command, ("CASE_CLOSED", f"A closed case cannot {command}."))
        raise Conflict(code, message)
    return after


# --- what a command does to a case --------------------------------------------------------------


@dataclass(frozen=True)
class CaseChange:
    """What a command does to a case: what happened (``opened``, ``note_added``, ``reassigned``,
    ``labels_changed``, ``summary_changed``, ``closed``, ``reopened``: the event
    ``case.<what>`` tells of it), the case's fields it sets, and what that event says beyond the
    case's id, contact and version.

    The service layer applies it with ``apply_case_change`` (services/cases/handlers/
    changes.py), which also bumps ``case_version``: no change of a case can skip its version or
    its event, and consumers that receive events out of order keep the newest state."""

    what: str
    sets: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)


def open_case(now: datetime) -> CaseChange:
    return CaseChange(
        "opened", sets={"opened_on": now, "close_count": 0}, data={"opened_on": now.isoformat()}
    )


def add_note(state: CaseState) -> CaseChange:
    next_state(state, "note")
    return CaseChange("note_added")


def reassign(
    state: CaseState, current: tuple[str, str | None], wanted: tuple[str, str | None]
) -> CaseChange | None:
    """To another partner and/or user; None when that is who has it already."""
    next_state(state, "reassign")
    if wanted == current:
        return None
    partner_id, user_id = wanted
    return CaseChange("reassigned", sets={"partner_id": partner_id, "user_id": user_id})


def relabel(state: CaseState, current: Set[str], wanted: Set[str]) -> CaseChange | None:
    """The case's labels become ``wanted``; None when they are already."""
    next_state(state, "label")
    if set(wanted) == set(current):
        return None
    return CaseChange("labels_changed", data={"labels": sorted(wanted)})


def resummarise(state: CaseState, current: str, wanted: str) -> CaseChange | None:
    """The case's summary becomes ``wanted`` (an open case's); None when it already is."""
    next_state(state, "summarise")
    if wanted == current:
        return None
    return CaseChange("summary_changed", sets={"summary": wanted})


def check_state(state: CaseState, command: str) -> None:
    """Raise Conflict unless the case's state allows ``command`` (checked before a handler looks
    anything up, so that a closed case answers 409 whatever else is wrong)."""
    next_state(state, command)


def close_case(state: CaseState, close_count: int, now: datetime) -> CaseChange:
    """Close; the event says whether this is the first close (the org may start its follow-up
    flow only then)."""
    next_state(state, "close")
    return CaseChange(
        "closed",
        sets={"closed_on": now, "close_count": close_count + 1},
        data={"closed_on": now.isoformat(), "first_close": close_count == 0},
    )


def reopen_case(state: CaseState, now: datetime) -> CaseChange:
    next_state(state, "reopen")
    return CaseChange(
        "reopened",
        sets={"closed_on": None, "reopened_on": now},
        data={"opened_on": now.isoformat(), "archived_external_ids": []},
    )


def needs_warning(
    opened_on: datetime, state: CaseState, now: datetime, threshold_days: int | None
) -> bool:
    """An open case older than the org's threshold deserves attention."""
    if state is not CaseState.OPEN or not threshold_days:
        return False
    return now - opened_on > timedelta(days=threshold_days)


# --- messages -----------------------------------------------------------------------------------

FOLDERS = ("inbox", "flagged", "archived", "unlabelled", "sent")
MESSAGE_ACTIONS = ("label", "unlabel", "flag", "unflag", "archive", "restore")

LOCK_DURATION = timedelta(minutes=5)


def lock_holder(locked_by: str | None, locked_until: datetime | None, now: datetime) -> str | None:
    """The user holding a message's soft lock, or None once it expired."""
    if locked_by is None or locked_until is None or locked_until <= now:
        return None
    return locked_by


def may_lock(user_id: str, locked_by: str | None, locked_until: datetime | None, now: datetime):
    holder = lock_holder(locked_by, locked_until, now)
    return holder is None or holder == user_id


def merge_labeler_labels(
    current: Set[str], previous_from_labeler: Set[str], now_from_labeler: Set[str]
) -> set[str]:
    """Apply the labeler's newest opinion without undoing what people did by hand.

    Only the labeler's *change* is applied: labels it newly gives are added, labels it no longer
    gives are removed; a label a partner added or removed by hand stays as they left it.
    """
    removed = previous_from_labeler - now_from_labeler
    added = now_from_labeler - previous_from_labeler
    return (set(current) - removed) | added


def restore_allowed(case_state: CaseState | None) -> bool:
    """A message in an open case stays archived: the case is where it is answered."""
    return case_state is not CaseState.OPEN


# --- folder counts ------------------------------------------------------------------------------
# The counts are kept per set of messages that look alike to every reader: one row per (org, the
# message's labels, archived, flagged, simulation). A reader's folders are sums over the org's
# rows, so who sees what (a partner restricted to new labels) never needs anything recomputed.


@dataclass(frozen=True, order=True)
class CountKey:
    """Which count row a received message is in."""

    label_set: str  # the label ids, sorted, joined by LABEL_SET_SEPARATOR ("" for none)
    archived: bool
    flagged: bool
    simulation: bool

    @property
    def labels(self) -> frozenset[str]:
        return (
            frozenset(self.label_set.split(LABEL_SET_SEPARATOR)) if self.label_set else frozenset()
        )


LABEL_SET_SEPARATOR = ","


def label_set(label_ids: Iterable[str]) -> str:
    """A set of labels as one string: sorted ids, so that equal sets are equal strings."""
    return LABEL_SET_SEPARATOR.join(sorted(set(label_ids)))


def label_set_hash(labels: str) -> str:
    """The fixed-size key of a label set in the count rows' primary key (a set of many labels
    would not fit in an index entry). The data migration 0003 holds a copy: keep them equal."""
    return hashlib.blake2b(labels.encode(), digest_size=16).hexdigest()


def count_key(
    label_ids: Iterable[str], *, received: bool, archived: bool, flagged: bool, simulation: bool
) -> CountKey | None:
    """The count row of a message in this state; None while it is not received (not shown)."""
    if not received:
        return None
    return CountKey(label_set(label_ids), archived, flagged, simulation)


def count_deltas(moves: Iterable[tuple[CountKey | None, CountKey | None]]) -> dict[CountKey, int]:
    """What moving each message from its first key to its second does to the counts (None: not
    counted), the keys that end unchanged left out."""
    deltas: dict[CountKey, int] = {}
    for before, after in moves:
        if before == after:
            continue
        if before is not None:
            deltas[before] = deltas.get(before, 0) - 1
        if after is not None:
            deltas[after] = deltas.get(after, 0) + 1
    return {key: n for key, n in deltas.items() if n}


def sees_message_labels(actor: Actor, labels: Set[str]) -> bool:
    """Whether a message with these labels is in the actor's folders (``can_see_message``
    outside of cases, which folders do not look at)."""
    return can_see_message(actor, labels)


def folder_counts(
    actor: Actor, rows: Iterable[tuple[CountKey, int]], *, simulation: bool = False
) -> tuple[dict[str, int], dict[str, int]]:
    """The actor's folder counts and per-label inbox counts, from the org's count rows.

    Folders count the messages the actor sees: inbox (administrators: the labelled ones; the
    unlabelled are their own folder), flagged, archived. Labels count, for each label the actor
    sees, the inbox messages carrying it, of any visibility (a partner sees every message of a
    label it sees). Simulated messages count only when asked. Sent is not here: replies are
    counted apart."""
    folders = {"inbox": 0, "flagged": 0, "archived": 0}
    if actor.is_admin:
        folders["unlabelled"] = 0
    labels: dict[str, int] = {}
    for key, n in rows:
        if not n or (key.simulation and not simulation):
            continue
        carried = key.labels
        for label in carried:
            if not key.archived and actor.sees_label(label):
                labels[label] = labels.get(label, 0) + n
        if not sees_message_labels(actor, carried):
            continue
        if key.archived:
            folders["archived"] += n
        elif carried or not actor.is_admin:
            folders["inbox"] += n
        else:
            folders["unlabelled"] += n
        if key.flagged:
            folders["flagged"] += n
    return folders, {label: n for label, n in labels.items() if n}


# --- contact pseudonyms -------------------------------------------------------------------------

# Crockford's base32: no I, L, O or U, so a reference read over the phone is not misheard.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REF_LENGTH = 8
LONG_REF_LENGTH = 12  # used when two contacts of one org collide on the short form


def pseudonym(salt: str, org: str, contact_uuid: str, length: int = REF_LENGTH) -> str:
    """A contact's stable, unguessable reference: an HMAC of org and contact keyed with the org's
    secret salt, written as ``C-`` and ``length`` base32 characters, e.g. ``C-7F3K2Q9X``."""
    digest = hmac.new(salt.encode(), f"{org}\x1f{contact_uuid}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[number & 31])
        number >>= 5
    return "C-" + "".join(chars)


def display_value(fields: dict[str, str | None] | None, display_field: str | None) -> str | None:
    """The one contact field the org chose to show partners, if any."""
    if not display_field or not fields:
        return None
    return fields.get(display_field)


# --- cursors ------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    pass


def encode_cursor(*parts: object) -> str:
    """An opaque cursor: the sort key of the last item of a page."""
    raw = json.dumps(
        [p.isoformat() if isinstance(p, datetime) else p for p in parts], separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> tuple:
    """Read a cursor back; ``kinds`` says the type of each part (datetime, str, int)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        parts = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise InvalidCursor("cursor does not fit this list")
        decoded = []
        for part, kind in zip(parts, kinds, strict=True):
            if kind is datetime:
                value = datetime.fromisoformat(part)
                if value.tzinfo is None:
                    raise InvalidCursor("cursor time has no zone")
                decoded.append(value)
            elif isinstance(part, kind) and not isinstance(part, bool):
                decoded.append(part)
            else:
                raise InvalidCursor("cursor part has the wrong type")
        return tuple(decoded)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("Not a valid cursor.") from exc


# --- signing in to the web pages ----------------------------------------------------------------

MIN_PASSWORD = 10
MAX_PASSWORD = 200
LINK_LIFETIME = {"invite": timedelta(days=3), "reset": timedelta(hours=2)}
# Failed sign-ins allowed in one window, per account and per address (many people may share
# one office's address).
FAILURE_WINDOW = timedelta(minutes=15)
MAX_FAILURES = {"account": 5, "address": 30}


def password_problem(password: str) -> str | None:
    """Why a new password will not do, or None."""
    if len(password) < MIN_PASSWORD:
        return "short"
    if len(password) > MAX_PASSWORD:
        return "long"
    return None


def wait_before_sign_in(
    failures: int, window_start: datetime, now: datetime, kind: str
) -> int | None:
    """None if a sign-in may be tried now, else the seconds to wait (the window's rest)."""
    if now - window_start >= FAILURE_WINDOW or failures < MAX_FAILURES[kind]:
        return None
    return max(1, int((window_start + FAILURE_WINDOW - now).total_seconds()))

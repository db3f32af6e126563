"""Statistics, the pure part: what a piece of history counts for, and where.

Everything counted is a **fact** with a key of its own (an incoming message, a reply, a case
opened or closed, a first reply, a close's duration). The service layer stores each fact once,
with its key as primary key, in the transaction of what it counts, and adds it to the daily
counts in the same transaction: a redelivered event finds its fact stored and adds nothing. The
rebuild command replays the same history through these same functions, so what it gives and what
was counted live are one computation.

The times between events follow a case's **clock** (kept on the case row as JSON):

- *first reply, for the org*: from the case's opening to its first reply (once per case);
- *first reply, for a partner*: from the case's (re)assignment to that partner to that partner's
  first reply in the case; an assignment a partner made to itself (its user opened the case for
  it, or reassigned it to it) measures nothing;
- *time to close*: from the latest assignment (opening, reassignment or reopening) to the close.

Days are the org's: a fact counts on the day its moment falls on in the org's timezone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

# The metrics: counts (n) and durations (n and the sum of seconds).
INCOMING = "incoming"  # messages received (per org; per label when labelled)
REPLIES = "replies"  # replies written by users (per org, partner, user)
OPENED = "opened"  # cases opened (per org, assignee partner, opening user, case labels)
CLOSED = "closed"  # cases closed (per org, assignee partner, closing user, case labels)
FIRST_REPLY = "first_reply"  # org meaning: case opened -> first reply
PARTNER_FIRST_REPLY = "partner_first_reply"  # assignment to a partner -> its first reply
TIME_TO_CLOSE = "time_to_close"  # latest assignment -> close
REASSIGNED = "reassigned"  # reassignments (per org, the new partner, the reassigning user)
NOTES = "notes"  # notes added (per org, the case's assignee partner, the writer)
METRICS = (
    INCOMING,
    REPLIES,
    OPENED,
    CLOSED,
    FIRST_REPLY,
    PARTNER_FIRST_REPLY,
    TIME_TO_CLOSE,
    REASSIGNED,
    NOTES,
)
DURATIONS = (FIRST_REPLY, PARTNER_FIRST_REPLY, TIME_TO_CLOSE)

ORG, PARTNER, USER, LABEL = "org", "partner", "user", "label"  # the scopes of a count


@dataclass(frozen=True)
class Fact:
    key: str  # unique within the org: what makes counting idempotent
    metric: str
    at: datetime
    seconds: float | None = None  # for durations
    partner: str | None = None
    user: str | None = None
    labels: tuple[str, ...] = ()
    org_wide: bool = True  # False: counts for its labels only (the org counted it already)


@dataclass(frozen=True)
class Increment:
    """One fact's share of one daily count row."""

    day: date
    scope: str
    scope_id: str  # "" for the org
    metric: str
    n: int
    seconds: float


def day_of(moment: datetime, timezone: str) -> date:
    return moment.astimezone(ZoneInfo(timezone)).date()


def increments(fact: Fact, timezone: str) -> list[Increment]:
    """The daily count rows a fact adds to: the org's, and its partner's, user's and labels'."""
    day = day_of(fact.at, timezone)
    seconds = fact.seconds or 0.0
    scopes = [(ORG, "")] if fact.org_wide else []
    if fact.partner:
        scopes.append((PARTNER, fact.partner))
    if fact.user:
        scopes.append((USER, fact.user))
    scopes += [(LABEL, label) for label in sorted(set(fact.labels))]
    return [Increment(day, scope, sid, fact.metric, 1, seconds) for scope, sid in scopes]


# --- facts of messages and replies ---------------------------------------------------------------
def incoming(message_id: str, received_at: datetime) -> Fact:
    return Fact(f"in:{message_id}", INCOMING, received_at)


def labelled(message_id: str, label_id: str, received_at: datetime) -> Fact:
    """A received message counted for a label the first time it carries it."""
    return Fact(
        f"in:{message_id}:{label_id}", INCOMING, received_at, labels=(label_id,), org_wide=False
    )


def reply(outgoing_id: str, at: datetime, partner: str | None, user: str) -> Fact:
    return Fact(f"re:{outgoing_id}", REPLIES, at, partner=partner, user=user)


# --- a case's clock ------------------------------------------------------------------------------
@dataclass
class CaseClock:
    """What a case's time measures need to remember between its events."""

    opened_on: datetime | None = None
    org_replied: bool = False
    assigned_on: datetime | None = None  # the latest assignment (open, reassign, reopen)
    partner: str | None = None  # the assignee partner
    waiting_key: str | None = None  # the assignment whose partner's first reply is awaited
    waiting_since: datetime | None = None
    replied_partners: list[str] = field(default_factory=list)  # since the latest assignment

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("opened_on", "assigned_on", "waiting_since"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> CaseClock:
        data = dict(data or {})
        for name in ("opened_on", "assigned_on", "waiting_since"):
            if data.get(name):
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)


def _assign(clock: CaseClock, key: str, at: datetime, partner: str, self_assigned: bool) -> None:
    clock.assigned_on = at
    clock.partner = partner
    clock.replied_partners = []
    clock.waiting_key = None if self_assigned else key
    clock.waiting_since = None if self_assigned else at


def case_opened(
    clock: CaseClock,
    action_id: str,
    at: datetime,
    partner: str,
    user: str | None,
    self_assigned: bool,
    labels: Iterable[str],
) -> list[Fact]:
    clock.opened_on = at
    clock.org_replied = False
    _assign(clock, f"pfr:{action_id}", at, partner, self_assigned)
    return [Fact(f"op:{action_id}", OPENED, at, partner=partner, user=user, labels=tuple(labels))]


def case_reassigned(
    clock: CaseClock,
    action_id: str,
    at: datetime,
    partner: str,
    user: str | None,
    self_assigned: bool,
) -> list[Fact]:
    _assign(clock, f"pfr:{action_id}", at, partner, self_assigned)
    return [Fact(f"ra:{action_id}", REASSIGNED, at, partner=partner, user=user)]


def case_noted(action_id: str, at: datetime, partner: str, user: str | None) -> list[Fact]:
    return [Fact(f"nt:{action_id}", NOTES, at, partner=partner, user=user)]


def case_reopened(clock: CaseClock, action_id: str, at: datetime, partner: str) -> list[Fact]:
    """A reopening restarts the time to close; the partner's first reply is not asked again."""
    clock.assigned_on = at
    clock.partner = partner
    return []


def case_replied(
    clock: CaseClock, outgoing_id: str, at: datetime, partner: str | None, user: str
) -> list[Fact]:
    """A reply in the case (the reply itself counts as ``reply``, outside the clock)."""
    facts = []
    if not clock.org_replied and clock.opened_on is not None:
        clock.org_replied = True
        seconds = max(0.0, (at - clock.opened_on).total_seconds())
        facts.append(Fact(f"fr:{outgoing_id}", FIRST_REPLY, at, seconds, partner, user))
    if (
        clock.waiting_key is not None
        and clock.waiting_since is not None
        and partner is not None
        and partner == clock.partner
    ):
        seconds = max(0.0, (at - clock.waiting_since).total_seconds())
        facts.append(Fact(clock.waiting_key, PARTNER_FIRST_REPLY, at, seconds, partner, user))
        clock.waiting_key = clock.waiting_since = None
    return facts


def case_closed(
    clock: CaseClock,
    action_id: str,
    at: datetime,
    partner: str,
    user: str | None,
    labels: Iterable[str],
) -> list[Fact]:
    facts = [Fact(f"cl:{action_id}", CLOSED, at, partner=partner, user=user, labels=tuple(labels))]
    if clock.assigned_on is not None:
        seconds = max(0.0, (at - clock.assigned_on).total_seconds())
        facts.append(Fact(f"ttc:{action_id}", TIME_TO_CLOSE, at, seconds, partner, user))
    clock.waiting_key = clock.waiting_since = None  # a closed case waits for nobody
    return facts


# --- reading -------------------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` percentile of ``values`` by linear interpolation (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def days_between(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day = date.fromordinal(day.toordinal() + 1)

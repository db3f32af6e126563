"""flowbridge's rules, free of I/O: which case version wins, which groups to take away from a
contact and give back, when the follow-up flow starts and with which params."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import events as ev

# Why a contact was not (fully) suspended or restored: the ``reason`` of contact.suspended,
# contact.restored and outgoing.failed, and the error of a skipped or failed side effect.
NOT_CONNECTED = "not_connected"  # the org has no flow engine connection
CONFIGURATION = "configuration"  # the flow engine refused the token or the URL is wrong
UNAVAILABLE = "unavailable"  # the flow engine kept failing for the whole retry budget
REJECTED = "rejected"  # the flow engine refused the request itself (400)
CONTACT_NOT_FOUND = "contact_not_found"
ANOTHER_CASE_OPEN = "another_case_open"


def contact_inactive(status: str) -> str:
    """The reason for a contact that is blocked, stopped or archived in the flow engine."""
    return f"contact_{status}"


def no_labels_to_mirror(labeled: Mapping[str, Any]) -> bool:
    """A message.labeled that no org setting can mirror: a simulation, a message the flow engine
    gave no uuid, or no label synced with the engine among its labels. Such events are published
    under a routing key this queue does not bind (shared/bus/topology.py); this catches those
    that still come (a binding of an earlier version, a dead letter replayed)."""
    return not ev.may_mirror_labels(labeled)


def no_messages_to_mirror(changed: Mapping[str, Any]) -> bool:
    """A message.archived or message.restored naming no message the flow engine knows."""
    return not changed["external_ids"]


@dataclass(frozen=True)
class OrgPolicy:
    """What an org asked flowbridge to do; an org that never sent its settings asks for nothing."""

    suspend_groups: tuple[str, ...] = ()
    followup_flow: str | None = None
    followup_every_close: bool = False
    interrupt_on_open: bool = False
    mirror_labels: bool = False
    mirror_archive: bool = False


def is_newer(known_version: int | None, incoming_version: int) -> bool:
    """Events converge on the highest version: an event not newer than what was applied is stale."""
    return known_version is None or incoming_version > known_version


def merged(first: Iterable[str], second: Iterable[str]) -> list[str]:
    """Both lists, first one's order first, without repeats."""
    return list(dict.fromkeys([*first, *second]))


@dataclass(frozen=True)
class Suspension:
    remove: tuple[str, ...]  # suspend groups the contact is in, that can be changed by hand
    skipped: tuple[str, ...]  # suspend groups the contact is in, that are smart (query based)


def plan_suspension(
    suspend_groups: Sequence[str], contact_groups: Iterable[str], smart_groups: Iterable[str]
) -> Suspension:
    member_of = set(contact_groups)
    smart = set(smart_groups)
    present = [group for group in dict.fromkeys(suspend_groups) if group in member_of]
    return Suspension(
        remove=tuple(g for g in present if g not in smart),
        skipped=tuple(g for g in present if g in smart),
    )


@dataclass(frozen=True)
class Restoration:
    groups: tuple[str, ...]  # to add the contact back to now
    reason: str | None  # why not (all) of them
    releases: bool  # this close ends the contact's suspension record
    still_owed: tuple[str, ...] = ()  # removed groups kept on record for a later close


def plan_restoration(
    case_id: str,
    open_case_id: str | None,
    removed_groups: Sequence[str],
    contact_status: str | None,
    problem: str | None = None,
) -> Restoration:
    """What closing ``case_id`` does to the contact.

    ``open_case_id`` is the case holding the contact's suspension (None: none does, e.g. the
    opening was never seen); ``contact_status`` is the engine's (None: no such contact);
    ``problem`` is why the engine could not be asked (not connected, bad configuration).
    """
    if open_case_id is not None and open_case_id != case_id:
        # A newer case of the contact was opened (its event came first): it holds the groups.
        return Restoration((), ANOTHER_CASE_OPEN, releases=False, still_owed=tuple(removed_groups))
    if problem is not None:
        # Nothing can be restored now; keep the groups so that a later case gives them back.
        return Restoration((), problem, releases=True, still_owed=tuple(removed_groups))
    if not removed_groups:
        return Restoration((), None, releases=True)
    if contact_status is None:
        return Restoration((), CONTACT_NOT_FOUND, releases=True)
    if contact_status != "active":
        # As CasePro: a blocked or stopped contact is not put back. Unlike CasePro the record is
        # cleared all the same, so the contact's next case starts afresh.
        return Restoration((), contact_inactive(contact_status), releases=True)
    return Restoration(tuple(removed_groups), None, releases=True)


def wants_followup(policy: OrgPolicy, first_close: bool) -> bool:
    """CasePro started the follow-up flow on a case's first close only; an org may ask for all."""
    return policy.followup_flow is not None and (first_close or policy.followup_every_close)


def followup_params(
    case_id: str, assignee: Mapping[str, Any], opened_on: datetime, closed_on: datetime
) -> dict[str, Any]:
    """The follow-up flow's ``@trigger.params``: CasePro's, plus when the case closed."""
    return {
        "case": {
            "id": case_id,
            "assignee": {"id": assignee["id"], "name": assignee["name"]},
            "opened_on": opened_on.isoformat(),
            "closed_on": closed_on.isoformat(),
        }
    }


def effect_key(kind: str, *parts: object) -> str:
    """The ledger key of a side effect: what it is for, so a repeat is recognised."""
    return ":".join([kind, *(str(part) for part in parts)])


def token_fingerprint(token: str) -> str:
    """A short, non-reversible name of a token, for operators to tell tokens apart."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]

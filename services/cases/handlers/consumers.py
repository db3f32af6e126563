"""The events cases consumes: messages received and labelled (new messages of a contact with an
open case go into it), and flowbridge's reports (replies sent or failed, the contact suspended
or restored, the follow-up flow started, the engine's catalog)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select
from sqlalchemy.orm import Session, make_transient_to_detached

import services.cases.handlers.statistics as statistics
from services.cases.domain import (
    merge_labeler_labels,
)
from services.cases.handlers.cache import cache_of
from services.cases.handlers.changes import mirror_archive
from services.cases.handlers.contacts import (
    ensure_contact,
    insert_contacts,
    insert_contacts_committed,
)
from services.cases.handlers.counts import note_locked
from services.cases.handlers.notifications import notify, watchers
from services.cases.handlers.rows import (
    ensure_org,
    existing_labels,
    known_message_labels,
    known_open_case,
    live_labels,
    set_message_labels,
)
from services.cases.models import (
    Case,
    CaseAction,
    Catalog,
    Contact,
    Label,
    Message,
    MessageAction,
    MessageLabel,
    Org,
    Outgoing,
)
from shared import events as ev
from shared.db import new_id
from shared.events import Envelope
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


MESSAGE_EVENTS = (ev.MESSAGE_RECEIVED, ev.MESSAGE_LABELED)


def awaiting_labels(bodies: Sequence[Any]) -> set[int]:
    """Of a worker's message events in hand, the message.received whose message.labeled is not
    among them: held back a moment (``Subscription.hold``), the two are handled in one
    transaction instead of two (bench/cases_worker.py --contacts 100: 2.5 and 2.4 ms of CPU
    per message in batches of five received, then five labelled; 1.4 and 1.4 with --together).
    Bodies are as delivered: anything that is not an event is for the batch to dead-letter,
    never held."""

    def named(body: Any, name: str) -> str | None:
        if isinstance(body, dict) and body.get("name") == name:
            data = body.get("data")
            if isinstance(data, dict) and isinstance(data.get("message_id"), str):
                return data["message_id"]
        return None

    labeled = {named(body, ev.MESSAGE_LABELED) for body in bodies} - {None}
    return {
        i
        for i, body in enumerate(bodies)
        if (message_id := named(body, ev.MESSAGE_RECEIVED)) is not None
        and message_id not in labeled
    }


def prepare_message_events(uow: UnitOfWork, events: list[Envelope]) -> None:
    """Before a worker's batch of message events is handled one by one: read each org with its
    live labels, its contacts with their open cases, the messages and their labels, in one query
    each, and insert the contacts new to their org in one statement. The handlers then find all
    of it in ``cache_of`` (bench: one round trip per row was what limited the cases worker; a
    batch now takes 10 statements where it took 12: tests/unit/test_worker_statement_counts.py).

    Contacts are read first: most messages come from contacts the org knows already. On
    PostgreSQL the new ones are then inserted and committed, on a connection of their own:
    inserted in the batch's transaction, a contact that another worker's batch also inserts
    made that batch wait for this one's commit, the most common wait with two cases workers
    (bench/pipeline.py --cases-workers 2). What that INSERT returns joins the session as it is,
    without being read again. A contact kept after a batch rolled back is what the batch's retry
    inserts anyway. (On SQLite the transaction holds the write lock: a second
    connection would wait for it.)"""
    session, known = uow.session, cache_of(uow.session)
    db = uow.store.db
    events = [event for event in events if event.name in MESSAGE_EVENTS]
    by_org: dict[str, dict[str, list[Envelope]]] = {}
    for event in events:
        by_org.setdefault(event.org, {}).setdefault(event.data["contact_uuid"], []).append(event)
    old_contacts: list[str] = []
    for org_key, contact_events in by_org.items():
        org = _org_and_labels(session, org_key)
        for contact, case in _contacts_and_cases(session, org.key, list(contact_events)):
            known.contacts[(org.key, contact.uuid)] = contact
            old_contacts.append(contact.id)
            if case is not None:
                known.open_cases[contact.id] = case
        new = {u: e for u, e in contact_events.items() if (org.key, u) not in known.contacts}
        if new and db.is_postgres:
            with db.autocommit.connect() as own:
                created = insert_contacts_committed(own, org, new)
            for row in created:  # committed: into the session as they are, without a SELECT
                contact = Contact(**row)
                make_transient_to_detached(contact)
                session.add(contact)
                known.contacts[(org.key, contact.uuid)] = contact
                known.new_contacts.add(contact.id)  # nobody could open a case for it yet
            new = {u: e for u, e in new.items() if (org.key, u) not in known.contacts}
        # On PostgreSQL, only those another worker or a pseudonym's collision kept out (then
        # ``ensure_contact`` handles each alone).
        insert_contacts(session, org, new)
    known.open_cases_read.update(old_contacts)
    message_ids = {event.data["message_id"] for event in events}
    if not message_ids:
        return
    # Locked (in id order) for the folder counts: what these messages were is what this batch
    # reads here, not what a concurrent change made of them.
    for message in session.scalars(_messages_locked(), {"ids": list(message_ids)}):
        known.messages[message.id] = message
        known.message_labels[message.id] = set()
    found = [mid for mid in message_ids if mid in known.messages]
    if found:
        for message_id, label_id in session.execute(_labels_of_messages(), {"ids": found}):
            known.message_labels[message_id].add(label_id)
    for message_id in found:
        note_locked(session, known.messages[message_id], known.message_labels[message_id])
    known.messages_read.update(message_ids)


# The batch's reads, each built once (SQLAlchemy then finds its compiled form at once; building
# such a SELECT anew, its cache key included, cost about as much CPU as running it).
@functools.cache
def _org_with_labels() -> Select:
    labels = (
        select(func.aggregate_strings(Label.id, " "))
        .where(Label.org == Org.key, Label.deleted_at.is_(None))
        .scalar_subquery()
    )
    return select(Org, labels).where(Org.key == bindparam("org"))


@functools.cache
def _contacts_with_open_case() -> Select:
    open_case = and_(Case.contact_id == Contact.id, Case.closed_on.is_(None))
    uuids = bindparam("uuids", expanding=True)
    return (
        select(Contact, Case)
        .outerjoin(Case, open_case)
        .where(Contact.org == bindparam("org"), Contact.uuid.in_(uuids))
    )


@functools.cache
def _messages_locked() -> Select:
    ids = bindparam("ids", expanding=True)
    return select(Message).where(Message.id.in_(ids)).order_by(Message.id).with_for_update()


@functools.cache
def _labels_of_messages() -> Select:
    ids = bindparam("ids", expanding=True)
    return select(MessageLabel.message_id, MessageLabel.label_id).where(
        MessageLabel.message_id.in_(ids)
    )


def _org_and_labels(session: Session, key: str) -> Org:
    """The org and its live labels (``live_labels``) in one query; created if new. Label ids
    are uuids: no space in them."""
    known = cache_of(session)
    row = session.execute(_org_with_labels(), {"org": key}).first()
    if row is None:
        org = ensure_org(session, key)
        live_labels(session, org.key)
        return org
    org, ids = row
    known.orgs[key] = org
    known.live_labels[key] = set(ids.split(" ")) if ids else set()
    return org


def _contacts_and_cases(
    session: Session, org: str, uuids: list[str]
) -> list[tuple[Contact, Case | None]]:
    """The org's contacts of these uuids, each with its open case (at most one: an index
    says so) in the same query."""
    rows = session.execute(_contacts_with_open_case(), {"org": org, "uuids": uuids})
    return [(contact, case) for contact, case in rows]


def on_message_received(uow: UnitOfWork, event: Envelope) -> None:
    """Store the message; while its contact has an open case it goes into the case, archived."""
    session, data = uow.session, event.data
    org = ensure_org(session, event.org)
    received_at = data["received_at"]
    contact = ensure_contact(
        session,
        org,
        data["contact_uuid"],
        fields=data["contact_fields"],
        fields_at=received_at,
        language=data["language"],
    )
    if contact.fields_at is None or received_at >= contact.fields_at:
        contact.fields = dict(data["contact_fields"])  # unchanged (no UPDATE) for a new contact
        contact.fields_at = received_at
        contact.language = data["language"]
    values = {
        "external_id": data["external_id"],
        "text": data["text"],
        "attachments": [dict(a) for a in data["attachments"]],
        "flow_uuid": data["flow_uuid"],
        "flow_name": data["flow_name"],
        "node_uuid": data["node_uuid"],
        "simulation": data["simulation"],
        "received_at": received_at,
    }
    message, created = _ensure_message(session, event, contact, values)
    if message is None:
        return
    first_receipt = created or message.received_at is None
    if not created:  # a new message was inserted with these values already
        values["external_id"] = data["external_id"] or message.external_id
        for key, value in values.items():
            setattr(message, key, value)
    if first_receipt:
        statistics.message_received(uow, org, message, known_message_labels(session, message.id))
    if not first_receipt or message.case_id is not None:
        return
    if contact.id in cache_of(session).new_contacts:
        return  # created in this transaction: nobody could open a case for it yet
    case = known_open_case(session, contact.id)
    if case is None:
        return
    message.case_id = case.id
    if not message.archived:
        message.archived = True
        session.add(
            MessageAction(id=new_id(), message_id=message.id, action="archive", case_id=case.id)
        )
        mirror_archive(uow, org, ev.MESSAGE_ARCHIVED, [message])
    notify(session, case, "message", None, watchers(session, case.id))


def on_message_labeled(uow: UnitOfWork, event: Envelope) -> None:
    """Apply the labeler's newest opinion; an older one arriving late changes nothing.

    Everything is read before anything changes, so that the message's changes go out in one
    UPDATE (a query in between would autoflush them).
    """
    session, data = uow.session, event.data
    org = ensure_org(session, event.org)
    contact = ensure_contact(session, org, data["contact_uuid"])
    message, _ = _ensure_message(session, event, contact)
    if message is None:
        return
    if message.labeler_at is not None and event.occurred_at <= message.labeler_at:
        message.labelled = True
        return
    current = known_message_labels(session, message.id)
    merged = merge_labeler_labels(current, set(message.labeler_labels), set(data["labels"]))
    wanted = existing_labels(session, org.key, merged)
    set_message_labels(session, message, current, wanted)
    statistics.message_labels_changed(uow, org, message, set(current), set(wanted))
    message.labelled = True
    message.labeler_labels = sorted(data["labels"])
    message.labeler_at = event.occurred_at


def _ensure_message(
    session: Session, event: Envelope, contact: Contact, values: dict[str, Any] | None = None
) -> tuple[Message | None, bool]:
    """The event's message and whether this call created it (with ``values``); None when the
    message names another org or contact than the event."""
    data = event.data
    known = cache_of(session)
    message = known.messages.get(data["message_id"])
    if message is None and data["message_id"] not in known.messages_read:
        message = session.get(Message, data["message_id"], with_for_update=True)
        if message is not None:  # what the counts start from: see prepare_message_events
            note_locked(session, message, known_message_labels(session, message.id))
    created = message is None
    if message is None:
        message = Message(
            id=data["message_id"],
            org=event.org,
            contact_id=contact.id,
            external_id=data.get("external_id"),
            attachments=[],
            labeler_labels=[],
            simulation=data.get("simulation", False),
        )
        for key, value in (values or {}).items():
            setattr(message, key, value)
        session.add(message)  # a replica inserting it too collides at the flush; we retry then
        known.message_labels[message.id] = set()
    elif message.org != event.org or message.contact_id != contact.id:
        log.error("%s %s names another org or contact than before; ignored", event.name, event.id)
        return None, False
    known.messages[message.id] = message
    return message, created


def on_outgoing_sent(uow: UnitOfWork, event: Envelope) -> None:
    outgoing = _outgoing_of(uow.session, event)
    if outgoing is not None and outgoing.delivery != "sent":
        outgoing.delivery = "sent"
        outgoing.failure = None
        outgoing.sent_on = event.data["sent_on"]


def on_outgoing_failed(uow: UnitOfWork, event: Envelope) -> None:
    """A failure never overrides a delivery the engine confirmed (they may arrive reversed)."""
    session = uow.session
    outgoing = _outgoing_of(session, event)
    if outgoing is None or outgoing.delivery != "pending":
        return
    outgoing.delivery = "failed"
    outgoing.failure = event.data["reason"]
    if outgoing.case_id is not None:
        case = session.get(Case, outgoing.case_id)
        if case is not None:
            notify(session, case, "failed", None, [outgoing.user_id])


def _outgoing_of(session: Session, event: Envelope) -> Outgoing | None:
    outgoing = session.get(Outgoing, event.data["outgoing_id"])
    if outgoing is None or outgoing.org != event.org:
        log.warning("%s for unknown reply %s ignored", event.name, event.data["outgoing_id"])
        return None
    return outgoing


def on_contact_suspended(uow: UnitOfWork, event: Envelope) -> None:
    data = event.data
    _system_action(
        uow.session,
        event,
        "suspended",
        {"groups": list(data["groups"]), "skipped": list(data["skipped"])},
    )


def on_contact_restored(uow: UnitOfWork, event: Envelope) -> None:
    data = event.data
    _system_action(
        uow.session, event, "restored", {"groups": list(data["groups"]), "reason": data["reason"]}
    )


def on_followup_started(uow: UnitOfWork, event: Envelope) -> None:
    catalog = uow.session.get(Catalog, event.org)
    flows = {f["uuid"]: f["name"] for f in catalog.flows} if catalog else {}
    flow = event.data["flow_uuid"]
    _system_action(
        uow.session, event, "followup", {"flow": {"uuid": flow, "name": flows.get(flow)}}
    )


def _system_action(session: Session, event: Envelope, kind: str, details: dict[str, Any]) -> None:
    """What flowbridge did for a case, in its timeline at the moment it happened."""
    case = session.get(Case, event.data["case_id"])
    if case is None or case.org != event.org:
        log.warning("%s for unknown case %s ignored", event.name, event.data["case_id"])
        return
    session.add(
        CaseAction(
            id=new_id(), case_id=case.id, kind=kind, data=details, created_at=event.occurred_at
        )
    )


def on_catalog_synced(uow: UnitOfWork, event: Envelope) -> None:
    session, data = uow.session, event.data
    ensure_org(session, event.org)
    catalog = session.get(Catalog, event.org)
    if catalog is None:
        catalog = Catalog(org=event.org, synced_on=data["synced_on"])
        session.add(catalog)
    elif data["synced_on"] <= catalog.synced_on:
        return  # an older snapshot arriving late
    catalog.groups = [dict(g) for g in data["groups"]]
    catalog.flows = [dict(f) for f in data["flows"]]
    catalog.synced_on = data["synced_on"]

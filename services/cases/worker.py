"""AMQP only: the cases worker's subscriptions, each routing event names to a handler."""

from __future__ import annotations

from services.cases.handlers import consumers, counts, exports
from services.cases.models import open_store
from shared import events as ev
from shared.bus.chores import Chore
from shared.bus.dispatch import Handler, Subscription
from shared.bus.topology import CASES_DELIVERY, CASES_EXPORTS, CASES_MESSAGES
from shared.settings import Settings
from shared.uow import ServiceStore

EXPORT_SWEEP_EVERY = 3600.0  # seconds

MESSAGE_HANDLERS: dict[str, Handler] = {
    ev.MESSAGE_RECEIVED: consumers.on_message_received,
    ev.MESSAGE_LABELED: consumers.on_message_labeled,
}

FLOWBRIDGE_HANDLERS: dict[str, Handler] = {
    ev.OUTGOING_SENT: consumers.on_outgoing_sent,
    ev.OUTGOING_FAILED: consumers.on_outgoing_failed,
    ev.CONTACT_SUSPENDED: consumers.on_contact_suspended,
    ev.CONTACT_RESTORED: consumers.on_contact_restored,
    ev.FOLLOWUP_STARTED: consumers.on_followup_started,
    ev.CATALOG_SYNCED: consumers.on_catalog_synced,
}


def subscriptions(settings: Settings, store: ServiceStore | None = None) -> list[Subscription]:
    store = store or open_store(settings)
    counts.keep_counts()  # the folder counts move with the messages the handlers change
    return [
        Subscription(
            CASES_MESSAGES,
            store,
            MESSAGE_HANDLERS,
            prepare=consumers.prepare_message_events,
            hold=consumers.awaiting_labels,  # a message and its labels in one transaction
        ),
        Subscription(CASES_DELIVERY, store, FLOWBRIDGE_HANDLERS),
        # One export at a time, never batched: its handler commits each step itself
        # (handlers/exports.py), so a batch's rollback could not undo it. A build runs for
        # minutes: ``long`` keeps the worker's connection alive meanwhile.
        Subscription(
            CASES_EXPORTS,
            store,
            {ev.EXPORT_REQUESTED: exports.export_handler(settings)},
            batch=False,
            long=True,
        ),
    ]


def chores(settings: Settings, store: ServiceStore) -> list[Chore]:
    """Work on a clock: expired exports' files deleted within the hour (and at start)."""
    return [
        Chore("delete expired exports", EXPORT_SWEEP_EVERY, lambda: exports.sweep(store, settings))
    ]

"""The labeler worker's composition root: which queue feeds which handler."""

from __future__ import annotations

import functools

from services.labeler import handlers
from services.labeler.models import open_store
from shared import events as ev
from shared.bus.chores import Chore
from shared.bus.dispatch import Subscription
from shared.bus.topology import LABELER_LABELS, LABELER_MESSAGES
from shared.settings import Settings
from shared.uow import ServiceStore


def subscriptions(settings: Settings, store: ServiceStore | None = None) -> list[Subscription]:
    store = store or open_store(settings)
    cache = handlers.IndexCache()
    return [
        Subscription(
            LABELER_MESSAGES,
            store,
            {ev.MESSAGE_RECEIVED: functools.partial(handlers.label_message, cache=cache)},
        ),
        Subscription(
            LABELER_LABELS,
            store,
            {
                ev.LABEL_CREATED: handlers.apply_label_change,
                ev.LABEL_UPDATED: handlers.apply_label_change,
                ev.LABEL_DELETED: handlers.apply_label_deletion,
            },
        ),
    ]


def chores(settings: Settings, store: ServiceStore) -> list[Chore]:
    """Nothing to do on a clock."""
    return []

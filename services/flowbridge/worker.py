"""The flowbridge worker's composition root: which queue feeds which handler, and which flow
engine each org gets (the RapidPro API v2 adapter, or the null engine for orgs not connected)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from services.flowbridge import domain, handlers
from services.flowbridge.flow_engine import FlowEngine, NullFlowEngine, RapidProClient
from services.flowbridge.handlers import EngineFor, MakeClient
from services.flowbridge.models import EngineConnection, open_store
from services.flowbridge.steps import DEFAULT_OPTIONS, Options
from shared import events as ev
from shared.bus.chores import Chore
from shared.bus.dispatch import Handler, Subscription
from shared.bus.topology import (
    FLOWBRIDGE_CASES,
    FLOWBRIDGE_MIRROR,
    FLOWBRIDGE_ORGS,
    FLOWBRIDGE_OUTGOING,
)
from shared.events import Envelope
from shared.settings import Settings
from shared.uow import ServiceStore, UnitOfWork


def rapidpro_client(base_url: str, token: str) -> FlowEngine:
    """The adapter as the worker uses it: a short retry budget of its own, so one call stays well
    under the broker's heartbeat timeout; longer outages are retried by the dispatcher."""
    return RapidProClient(
        base_url, token, max_attempts=3, max_wait=5.0, timeout=(3.05, 10.0), backoff=0.5
    )


class EngineDirectory:
    """Gives each handler run the flow engine of an org, from the org's stored connection."""

    def __init__(self, make_client: MakeClient = rapidpro_client) -> None:
        self.make_client = make_client

    @contextmanager
    def scope(self, session: Session) -> Iterator[EngineFor]:
        """Engines opened in the scope (one per org) are closed when it ends."""
        opened: dict[str, FlowEngine] = {}

        def engine_for(org: str) -> FlowEngine:
            if org not in opened:
                connection = session.get(EngineConnection, org)
                opened[org] = (
                    self.make_client(connection.base_url, connection.api_token)
                    if connection is not None
                    else NullFlowEngine()
                )
            return opened[org]

        try:
            yield engine_for
        finally:
            for engine in opened.values():
                close = getattr(engine, "close", None)
                if close is not None:
                    close()


def subscriptions(
    settings: Settings,
    store: ServiceStore | None = None,
    *,
    make_client: MakeClient = rapidpro_client,
    options: Options = DEFAULT_OPTIONS,
) -> list[Subscription]:
    store = store or open_store(settings)
    engines = EngineDirectory(make_client)

    def calling_engine(handler: Callable[..., None]) -> Handler:
        @functools.wraps(handler)
        def run(uow: UnitOfWork, event: Envelope) -> None:
            with engines.scope(uow.session) as engine_for:
                handler(uow, event, engine_for, options)

        return run

    # Every flowbridge handler calls the flow engine, so none is batched (see Subscription).
    routes = {
        FLOWBRIDGE_CASES: {
            ev.CASE_OPENED: calling_engine(handlers.suspend_contact),
            ev.CASE_REOPENED: calling_engine(handlers.suspend_contact),
            ev.CASE_CLOSED: calling_engine(handlers.restore_contact),
        },
        FLOWBRIDGE_OUTGOING: {ev.OUTGOING_REQUESTED: calling_engine(handlers.send_reply)},
        FLOWBRIDGE_MIRROR: {
            ev.MESSAGE_LABELED: calling_engine(handlers.mirror_labels),
            ev.MESSAGE_ARCHIVED: calling_engine(handlers.mirror_archive),
            ev.MESSAGE_RESTORED: calling_engine(handlers.mirror_restore),
        },
        FLOWBRIDGE_ORGS: {
            ev.ORG_UPDATED: calling_engine(handlers.update_org),
            ev.LABEL_CREATED: handlers.record_label,
            ev.LABEL_UPDATED: handlers.record_label,
            ev.LABEL_DELETED: handlers.forget_label,
        },
    }
    # Most message events have nothing to mirror (no synced label): acknowledged without a
    # transaction, rather than a commit each.
    skips = {
        FLOWBRIDGE_MIRROR: {
            ev.MESSAGE_LABELED: domain.no_labels_to_mirror,
            ev.MESSAGE_ARCHIVED: domain.no_messages_to_mirror,
            ev.MESSAGE_RESTORED: domain.no_messages_to_mirror,
        }
    }
    return [
        Subscription(queue, store, routes[queue], batch=False, skip=skips.get(queue, {}))
        for queue in routes
    ]


def chores(settings: Settings, store: ServiceStore) -> list[Chore]:
    """Nothing to do on a clock."""
    return []

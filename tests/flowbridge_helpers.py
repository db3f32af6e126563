"""Flowbridge test support: event factories, a workspace in the RapidPro contract fake, and a
bridge that delivers events through the real dispatcher to the real handlers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from fakes.rapidpro import create_app
from services.flowbridge import handlers
from services.flowbridge.flow_engine import RapidProClient
from services.flowbridge.models import MIGRATIONS, Outbox, open_store
from services.flowbridge.steps import Options
from services.flowbridge.worker import subscriptions
from shared import events as ev
from shared.bus.dispatch import Outcome, dispatch
from shared.events import Envelope, new_event
from shared.settings import Settings
from shared.uow import ServiceStore
from tests.fakes_server import FakeControl, serve_app

ORG = "acme"
WS = "acme-ws"
TOKEN = "acme-api-token-5b1c9e0f7a"
BOT = "f10b0000-0000-4000-8000-0000000000b1"  # a manual group: the catch-all flow answers it
ADULTS = "f10b0000-0000-4000-8000-0000000000a1"  # a smart (query) group
UREPORTERS = "f10b0000-0000-4000-8000-0000000000c1"
ACTIVATE = "f10b0000-0000-4000-8000-0000000000f1"  # the follow-up flow, "Activate chat"
POLL = "f10b0000-0000-4000-8000-0000000000f2"
COUNSELLING = "f10b0000-0000-4000-8000-0000000000d1"  # our label uuid (the engine's differs)
ANN = "f10b0000-0000-4000-8000-000000000c01"  # in Bot, U-Reporters and Adults
BEN = "f10b0000-0000-4000-8000-000000000c02"  # in Bot
PARTNER = {"id": "f10b0000-0000-4000-8000-0000000000e1", "name": "Helpline NGO"}
OPENED_ON = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
CLOSED_ON = datetime(2026, 11, 3, 16, 5, tzinfo=UTC)


def workspace_spec(contacts: Sequence[str] = (ANN, BEN)) -> dict[str, Any]:
    people = {
        ANN: {"name": "Ann", "groups": [BOT, UREPORTERS, ADULTS], "fields": {"age": "19"}},
        BEN: {"name": "Ben", "groups": [BOT]},
    }
    return {
        "name": WS,
        "token": TOKEN,
        "groups": [
            {"uuid": BOT, "name": "Bot"},
            {"uuid": UREPORTERS, "name": "U-Reporters"},
            {"uuid": ADULTS, "name": "Adults", "query": "age >= 18"},
        ],
        "flows": [
            {"uuid": POLL, "name": "U-Report Poll"},
            {"uuid": ACTIVATE, "name": "Activate chat"},
        ],
        "labels": [{"name": "Counselling"}],
        "contacts": [
            {"uuid": uuid, "urns": [f"tel:+2567000{n:05d}"], **people.get(uuid, {"groups": [BOT]})}
            for n, uuid in enumerate(contacts)
        ],
    }


# --- event factories ----------------------------------------------------------------------------
def _event(name: str, data: dict[str, Any], org: str = ORG, producer: str = "cases") -> Envelope:
    return new_event(name, org=org, producer=producer, data=data)


def org_updated(version: int = 1, org: str = ORG, **settings: Any) -> Envelope:
    data = {
        "name": "Acme",
        "timezone": "Africa/Kampala",
        "suspend_groups": [BOT, ADULTS],
        "followup_flow": ACTIVATE,
        "followup_every_close": False,
        "interrupt_on_open": False,
        "mirror_labels": False,
        "mirror_archive": False,
        "org_version": version,
        **settings,
    }
    return _event(ev.ORG_UPDATED, data, org=org)


def case_opened(
    case_id: str = "case-1",
    version: int = 1,
    contact: str = ANN,
    *,
    reopened: bool = False,
    archived: Sequence[str] = (),
    org: str = ORG,
) -> Envelope:
    data = {
        "case_id": case_id,
        "case_version": version,
        "contact_uuid": contact,
        "assignee_partner": PARTNER,
        "opened_on": OPENED_ON.isoformat(),
        "archived_external_ids": list(archived),
    }
    return _event(ev.CASE_REOPENED if reopened else ev.CASE_OPENED, data, org=org)


def case_closed(
    case_id: str = "case-1",
    version: int = 2,
    contact: str = ANN,
    *,
    first_close: bool = True,
    org: str = ORG,
) -> Envelope:
    data = {
        "case_id": case_id,
        "case_version": version,
        "contact_uuid": contact,
        "assignee_partner": PARTNER,
        "opened_on": OPENED_ON.isoformat(),
        "closed_on": CLOSED_ON.isoformat(),
        "first_close": first_close,
    }
    return _event(ev.CASE_CLOSED, data, org=org)


def outgoing_requested(
    outgoing_id: str = "out-1",
    contact: str = ANN,
    text: str = "We are here for you.",
    org: str = ORG,
) -> Envelope:
    data = {"outgoing_id": outgoing_id, "contact_uuid": contact, "text": text, "case_id": "case-1"}
    return _event(ev.OUTGOING_REQUESTED, data, org=org)


def label_created(
    label_uuid: str = COUNSELLING,
    name: str = "Counselling",
    *,
    synced: bool = True,
    version: int = 1,
) -> Envelope:
    data = {
        "label_uuid": label_uuid,
        "name": name,
        "synced": synced,
        "active": True,
        "rule": [],
        "label_version": version,
    }
    return _event(ev.LABEL_CREATED, data, producer="cases")


def message_labeled(external_id: str, labels: Sequence[str], synced: Sequence[str]) -> Envelope:
    data = {
        "message_id": f"m-{external_id}",
        "contact_uuid": ANN,
        "labels": list(labels),
        "synced": list(synced),
        "external_id": external_id,
    }
    return _event(ev.MESSAGE_LABELED, data, producer="labeler")


def messages_archived(external_ids: Sequence[str], *, restored: bool = False) -> Envelope:
    data = {"message_ids": [f"m-{x}" for x in external_ids], "external_ids": list(external_ids)}
    return _event(ev.MESSAGE_RESTORED if restored else ev.MESSAGE_ARCHIVED, data)


# --- the bridge ---------------------------------------------------------------------------------
@dataclass
class Clock:
    """The handlers' clock; moving it on lets leases expire without waiting."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fast_client(base_url: str, token: str) -> RapidProClient:
    """No retries inside the adapter: every 5xx reaches the dispatcher, which retries it."""
    return RapidProClient(base_url, token, max_attempts=1, sleep=lambda _s: None)


@dataclass
class Bridge:
    url: str
    control: FakeControl
    store: ServiceStore
    clock: Clock
    settings: Settings

    def __post_init__(self) -> None:
        self.subscriptions = subscriptions(
            self.settings, self.store, make_client=fast_client, options=Options(clock=self.clock)
        )

    def connect(self, org: str = ORG, token: str = TOKEN) -> handlers.CatalogSummary:
        return handlers.connect_org(self.store, org, self.url, token, fast_client)

    def deliver(self, event: Envelope, **kwargs: Any) -> Outcome:
        """Hand one event to flowbridge as the transports do (the body, through dispatch)."""
        [subscription] = [s for s in self.subscriptions if event.name in s.queue.events]
        kwargs.setdefault("sleep", lambda _s: None)
        return dispatch(subscription, event.body(), **kwargs)

    def emitted(self, name: str | None = None) -> list[dict[str, Any]]:
        """Events flowbridge put in its outbox, oldest first (envelopes as JSON)."""
        with self.store.db.session() as session:
            rows = session.scalars(select(Outbox).order_by(Outbox.position)).all()
        return [row.envelope for row in rows if name is None or row.name == name]

    # what the fake flow engine knows
    def state(self) -> dict[str, Any]:
        return self.control.state(WS)

    def members(self, group: str) -> list[str]:
        return next(g["members"] for g in self.state()["groups"] if g["uuid"] == group)

    def requests(self, endpoint: str, *, ok_only: bool = False) -> list[dict[str, Any]]:
        found = self.control.requests(workspace=WS, endpoint=endpoint)
        return [r for r in found if not ok_only or r["status"] < 300]

    def set_contact(self, contact: str, **changes: Any) -> None:
        self.control.call("PATCH", f"/workspaces/{WS}/contacts/{contact}", changes)


@contextmanager
def running_bridge(settings: Settings, contacts: Sequence[str] = (ANN, BEN)) -> Iterator[Bridge]:
    with serve_app(create_app()) as url:
        control = FakeControl(url)
        control.create_workspace(workspace_spec(contacts))
        store = open_store(settings)
        store.db.migrate(MIGRATIONS)
        try:
            yield Bridge(url, control, store, Clock(), settings)
        finally:
            store.db.dispose()

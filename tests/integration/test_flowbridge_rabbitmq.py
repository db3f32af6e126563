"""flowbridge on the real RabbitMQ and PostgreSQL: case and reply events published on the broker,
consumed by the production worker, carried out against the RapidPro contract fake."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kombu import Connection
from sqlalchemy import select

from fakes.rapidpro import create_app
from services.flowbridge import handlers
from services.flowbridge.models import MIGRATIONS, OrgSettings, Outbox, open_store
from services.flowbridge.worker import rapidpro_client, subscriptions
from shared.bus.connection import declare_topology
from shared.bus.consumer import AmqpWorker
from shared.bus.publisher import ConfirmingPublisher
from shared.uow import ServiceStore
from tests.fakes_server import FakeControl, serve_app
from tests.flowbridge_helpers import (
    ACTIVATE,
    ANN,
    BEN,
    BOT,
    ORG,
    TOKEN,
    WS,
    case_closed,
    case_opened,
    org_updated,
    outgoing_requested,
    workspace_spec,
)

pytestmark = pytest.mark.integration

CONTACTS = [ANN, BEN, *(f"f10b0000-0000-4000-8000-00000000d{n:03d}" for n in range(4))]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for flowbridge")
        time.sleep(0.1)


@dataclass
class Running:
    control: FakeControl
    store: ServiceStore
    publish: Callable[..., None]

    def members(self, group: str) -> list[str]:
        state = self.control.state(WS)
        return next(g["members"] for g in state["groups"] if g["uuid"] == group)

    def succeeded(self, endpoint: str, method: str = "POST") -> list[dict]:
        found = self.control.requests(workspace=WS, endpoint=endpoint, method=method)
        return [r for r in found if r["status"] < 300]

    def emitted(self, name: str) -> list[dict]:
        with self.store.db.session() as session:
            return session.scalars(select(Outbox.envelope).where(Outbox.name == name)).all()

    def configure(self, event) -> None:
        self.publish(event)

        def applied() -> bool:
            with self.store.db.session() as session:
                row = session.get(OrgSettings, ORG)
                return row is not None and row.org_version >= event.data["org_version"]

        wait_until(applied)


@pytest.fixture
def flowbridge(pg_settings):
    with serve_app(create_app()) as url:
        control = FakeControl(url)
        control.create_workspace(workspace_spec(CONTACTS))
        store = open_store(pg_settings)
        store.db.migrate(MIGRATIONS)
        handlers.connect_org(store, ORG, url, TOKEN, rapidpro_client)
        with Connection(pg_settings.broker_url) as conn:
            declare_topology(conn, pg_settings)
        worker = AmqpWorker(pg_settings, subscriptions(pg_settings, store))
        thread = threading.Thread(target=worker.run)
        thread.start()
        publisher = ConfirmingPublisher(pg_settings)

        def publish(*events) -> None:
            confirmed = publisher.publish([(e.id, e.name, e.body()) for e in events])
            assert len(confirmed) == len(events)

        try:
            yield Running(control, store, publish)
        finally:
            worker.should_stop = True
            thread.join(timeout=30)
            publisher.close()
            store.db.dispose()


def test_the_contact_leaves_the_bot_and_comes_back_with_one_followup(flowbridge):
    flowbridge.configure(org_updated())

    flowbridge.publish(case_opened())
    wait_until(lambda: ANN not in flowbridge.members(BOT))

    closed = case_closed()
    flowbridge.publish(closed)
    wait_until(lambda: ANN in flowbridge.members(BOT) and flowbridge.succeeded("flow_starts"))
    flowbridge.publish(closed)  # the same event again, as after a relay crash
    time.sleep(1.0)

    [start] = flowbridge.succeeded("flow_starts")
    assert start["body"]["flow"] == ACTIVATE and start["body"]["contacts"] == [ANN]
    assert start["body"]["params"]["case"]["id"] == "case-1"
    assert len(flowbridge.emitted("followup.started")) == 1
    assert len(flowbridge.emitted("contact.restored")) == 1


def test_an_engine_outage_in_the_middle_loses_nothing_and_repeats_nothing(flowbridge):
    flowbridge.configure(org_updated())
    flowbridge.publish(
        *(case_opened(f"case-{n}", 1, contact) for n, contact in enumerate(CONTACTS))
    )
    wait_until(lambda: not set(CONTACTS) & set(flowbridge.members(BOT)))

    flowbridge.control.inject_fault(WS, status=503)  # every endpoint, until cleared
    flowbridge.publish(
        *(case_closed(f"case-{n}", 2, contact) for n, contact in enumerate(CONTACTS)),
        *(
            outgoing_requested(f"out-{n}", contact, f"reply {n}")
            for n, contact in enumerate(CONTACTS)
        ),
    )
    time.sleep(3.0)
    assert flowbridge.emitted("followup.started") == []  # nothing got through the outage
    flowbridge.control.clear_faults(WS)

    wait_until(
        lambda: (
            len(flowbridge.emitted("followup.started")) == len(CONTACTS)
            and len(flowbridge.emitted("outgoing.sent")) == len(CONTACTS)
        )
    )
    time.sleep(1.0)  # room for a duplicate to show up
    assert set(CONTACTS) <= set(flowbridge.members(BOT))
    starts = flowbridge.succeeded("flow_starts")
    assert sorted(s["body"]["contacts"][0] for s in starts) == sorted(CONTACTS)
    sends = flowbridge.succeeded("messages")
    assert sorted(s["body"]["text"] for s in sends) == sorted(f"reply {n}" for n in range(6))
    refused = [r for r in flowbridge.control.requests(workspace=WS) if r["status"] == 503]
    assert len(refused) >= 3  # the outage was real: calls failed and were retried
    assert len(flowbridge.emitted("contact.restored")) == len(CONTACTS)
    assert flowbridge.emitted("outgoing.failed") == []

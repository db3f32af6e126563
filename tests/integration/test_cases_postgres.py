"""Cases on the real PostgreSQL and RabbitMQ: events published on the broker and consumed by
the real cases worker, case.opened published once, and concurrent opens making one case."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kombu import Connection
from sqlalchemy import func, select, text

from services.cases.handlers.access import authenticate
from services.cases.handlers.inbox import message_conditions
from services.cases.models import Case, Message
from services.cases.worker import subscriptions
from shared import events as ev
from shared.bus.connection import declare_topology, kombu_queues
from shared.bus.consumer import AmqpWorker
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.events import read_event
from shared.relay import Relay
from tests.cases_helpers import CasesWorld, ids, message_labeled, message_received

# The same story on PostgreSQL: its notification query nests the case visibility rule.
from tests.unit.test_cases_cases import (  # noqa: F401 (a fixture and a test, collected here)
    helpline,
    test_notifications_never_outlive_access_to_the_case,
)

# The inbox filters on PostgreSQL, where the text search may read the trigram index.
from tests.unit.test_cases_inbox import (  # noqa: F401 (a fixture and a test, collected here)
    test_filters,
    two_partners,
)

pytestmark = pytest.mark.integration

WATCH = QueueSpec("watch", "cases", (ev.CASE_OPENED,))


@pytest.fixture
def world(pg_settings):
    world = CasesWorld(pg_settings)
    yield world
    world.close()


@pytest.fixture
def worker(pg_settings, world):
    """The real cases worker (shared AmqpWorker with the cases subscriptions), in a thread."""
    amqp = AmqpWorker(pg_settings, subscriptions(pg_settings, world.store))
    thread = threading.Thread(target=amqp.run, daemon=True)
    thread.start()
    yield amqp
    amqp.should_stop = True
    thread.join(timeout=30)
    amqp.connection.release()


def publish(settings, events):
    publisher = ConfirmingPublisher(settings)
    try:
        confirmed = publisher.publish([(e.id, e.name, e.body()) for e in events])
    finally:
        publisher.close()
    assert sorted(confirmed) == sorted(e.id for e in events)


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_messages_from_the_broker_reach_the_right_partners_inboxes(world, worker, pg_settings):
    health, violence = world.label("health"), world.label("violence")
    health_agent = world.user(world.partner("Health", restricted=True, labels=(health,)))
    violence_agent = world.user(world.partner("Violence", restricted=True, labels=(violence,)))
    with Connection(pg_settings.broker_url) as conn:  # queues exist before anything is sent
        declare_topology(conn, pg_settings, [s.queue for s in worker.subscriptions])
    first, second = message_received(), message_received()
    publish(
        pg_settings,
        [
            message_labeled(first, [health]),
            first,  # labelled before received
            second,
            message_labeled(second, [violence]),
            first,  # a redelivery
        ],
    )
    everything = {first.data["message_id"], second.data["message_id"]}
    assert wait_for(
        lambda: set(ids(world.ok(world.get(world.admin, "/api/v1/messages")))) == everything
    )
    assert ids(world.ok(world.get(health_agent, "/api/v1/messages"))) == [first.data["message_id"]]
    assert ids(world.ok(world.get(violence_agent, "/api/v1/messages"))) == [
        second.data["message_id"]
    ]
    assert (
        world.get(violence_agent, f"/api/v1/messages/{first.data['message_id']}").status_code == 404
    )
    assert wait_for(lambda: worker.handled == 5)


def test_opening_a_case_publishes_case_opened_once(world, pg_settings):
    label = world.label()
    partner = world.partner()
    agent = world.user(partner)
    message = world.message([label])
    with Connection(pg_settings.broker_url) as conn:
        declare_topology(conn, pg_settings, [WATCH])
    try:
        case = world.open_case(agent, message, partner)
        world.post(
            agent, "/api/v1/cases", {"summary": "again", "partner": partner, "message": message}
        )
        assert len(world.events(ev.CASE_OPENED)) == 1
        relay = Relay(world.store, ConfirmingPublisher(pg_settings), batch=100)
        while relay.relay_once():
            pass
        relay.publisher.close()
        received = drain(pg_settings)
        assert [(e.name, e.data["case_id"]) for e in received] == [(ev.CASE_OPENED, case["id"])]
    finally:
        with Connection(pg_settings.broker_url) as conn:
            for queue in kombu_queues(pg_settings, WATCH):
                conn.default_channel.queue_delete(queue.name)


def drain(settings, timeout=10.0):
    main, _ = kombu_queues(settings, WATCH)
    found = []
    with Connection(settings.broker_url) as conn:
        queue = main(conn.default_channel)
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            message = queue.get(accept=["json"])
            if message is None:
                time.sleep(0.05)
                continue
            found.append(read_event(message.body))
            message.ack()
        time.sleep(0.5)  # a duplicate would arrive now
        while (extra := queue.get(accept=["json"])) is not None:
            found.append(read_event(extra.body))
            extra.ack()
    return found


def test_concurrent_opens_make_one_case(world):
    label = world.label()
    partner = world.partner()
    agents = [world.user(partner) for _ in range(8)]
    message = world.message([label])
    barrier = threading.Barrier(len(agents))

    def open_case(agent):
        client = world.app.test_client()
        barrier.wait()
        return client.post(
            "/api/v1/cases",
            headers=agent.headers,
            json={"summary": "urgent", "partner": partner, "message": message},
        )

    with ThreadPoolExecutor(len(agents)) as pool:
        responses = list(pool.map(open_case, agents))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * (len(agents) - 1) + [201], [r.json for r in responses]
    assert len({r.json["id"] for r in responses}) == 1
    with world.store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 1
    assert len(world.events(ev.CASE_OPENED)) == 1


def test_a_text_search_can_read_the_trigram_index(world):
    """The search's condition (text ILIKE '%...%') is one the trigram index serves: with the
    table's scan ruled out, the plan of that condition reads ix_messages_text_trgm. (On a few
    rows PostgreSQL rightly scans; over 100,000 a rare word's search reads the index and the
    common word's the folder index, bench/cases.py.)"""
    actor = authenticate(world.store, world.admin.token)
    with world.store.db.session() as session, session.begin():
        *_, search = message_conditions(session, actor, text="Escola 100%")
        query = select(Message.id).where(search)
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(session.scalars(text(f"EXPLAIN {compiled}")))
    assert "ix_messages_text_trgm" in plan, plan

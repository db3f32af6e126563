"""Ingest on the real PostgreSQL and RabbitMQ: concurrency, and webhooks to the broker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kombu import Connection

from shared.bus.connection import declare_topology, kombu_queues
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.events import MESSAGE_RECEIVED, read_event
from shared.relay import Relay
from tests.ingest_helpers import ORG, counts, fixture, make_ingest

pytestmark = pytest.mark.integration

URL = f"/webhooks/{ORG}/flow"
WATCH = QueueSpec("watch", "received", (MESSAGE_RECEIVED,))


@pytest.fixture
def ingest(pg_settings):
    app, store, secret = make_ingest(pg_settings)
    yield app, store, secret
    store.db.dispose()


def test_twenty_concurrent_copies_make_one_message_and_one_event(ingest):
    app, store, secret = ingest
    body = fixture("resthook.json")
    barrier = threading.Barrier(20)

    def deliver(_):
        client = app.test_client()
        barrier.wait()
        return client.post(URL, data=body, headers={"Authorization": f"Token {secret}"})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(deliver, range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json["message"] for r in responses}) == 1  # the same answer for all
    assert counts(store) == (1, 1)


def rabbitmqctl(*args):
    import subprocess

    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.broker_restart
def test_webhooks_accepted_with_the_broker_stopped_reach_a_consumer_once_after_it_returns(
    ingest, pg_settings
):
    app, store, secret = ingest
    with Connection(pg_settings.broker_url) as conn:
        declare_topology(conn, pg_settings, [WATCH])
    relay = Relay(store, ConfirmingPublisher(pg_settings, timeout=5), batch=100, idle=0.02)
    thread = threading.Thread(target=relay.run)
    thread.start()
    client = app.test_client()
    try:
        rabbitmqctl("stop_app")
        accepted = []
        for i in range(200):
            body = fixture("editor_default.json").replace(b"bullying", f"bullying {i}".encode())
            response = client.post(URL, data=body, headers={"Authorization": f"Token {secret}"})
            assert response.status_code == 200  # ingest never waits for the broker
            accepted.append(response.json["message"])
        rabbitmqctl("start_app")
        seen = consume(pg_settings, expected=200, timeout=60)
        assert sorted(seen) == sorted(accepted)  # every one, none twice
    finally:
        rabbitmqctl("start_app")
        relay.should_stop = True
        thread.join(timeout=30)
        with Connection(pg_settings.broker_url) as conn:
            for queue in kombu_queues(pg_settings, WATCH):
                conn.default_channel.queue_delete(queue.name)


def consume(settings, expected, timeout):
    seen = []
    main, _ = kombu_queues(settings, WATCH)
    deadline = time.monotonic() + timeout
    with Connection(settings.broker_url) as conn:
        queue = main(conn.default_channel)
        while time.monotonic() < deadline and len(seen) < expected:
            message = queue.get(accept=["json"])
            if message is None:
                time.sleep(0.05)
                continue
            seen.append(read_event(message.body).data["message_id"])
            message.ack()
        time.sleep(0.5)  # a duplicate would arrive now
        while (extra := queue.get(accept=["json"])) is not None:
            seen.append(read_event(extra.body).data["message_id"])
            extra.ack()
    return seen

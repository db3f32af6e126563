"""Ingest on the real PostgreSQL and RabbitMQ: concurrency, and webhooks to the broker."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from kombu import Connection

from services.ingest.models import Message, Outbox
from shared.bus.connection import declare_topology, kombu_queues
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.events import MESSAGE_RECEIVED, read_event
from shared.outbox import insert_with_event
from shared.relay import Relay
from tests.ingest_helpers import ORG, counts, fixture, make_ingest
from tests.support import message_received

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


def test_a_webhook_is_written_in_one_statement_without_a_ping(ingest):
    """The message and its event in one round trip: no pool ping, no BEGIN nor COMMIT."""
    app, store, secret = ingest
    client, headers = app.test_client(), {"Authorization": f"Token {secret}"}
    client.post(URL, data=fixture("resthook.json"), headers=headers)  # secrets cached, pooled
    statements = []
    for engine in (store.db.engine, store.db.autocommit):
        sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    body = fixture("editor_default.json")
    assert client.post(URL, data=body, headers=headers).status_code == 200
    writes = [s for s in statements if "webhook_secrets" not in s]  # tests read them each time
    assert len(writes) == 1, writes
    assert writes[0].startswith("WITH inserted AS \n(INSERT INTO messages"), writes[0]
    assert "INSERT INTO outbox" in writes[0]
    assert counts(store) == (2, 2)


def test_a_connection_the_database_closed_is_replaced_and_the_webhook_accepted(ingest):
    """A restart leaves dead connections in the pool; without a ping the write meets one,
    and retries on a new one (the first failure has the pool drop them all)."""
    app, store, secret = ingest
    client, headers = app.test_client(), {"Authorization": f"Token {secret}"}
    assert client.post(URL, data=fixture("resthook.json"), headers=headers).status_code == 200
    backends = []
    for engine in (store.db.engine, store.db.autocommit):  # each pool's one connection
        with engine.connect() as pooled:
            backends.append(pooled.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    with psycopg_connect(store) as admin:
        for backend in backends:
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    response = client.post(URL, data=fixture("editor_default.json"), headers=headers)
    assert response.status_code == 200, response.json
    assert counts(store) == (2, 2)


def test_the_message_is_not_kept_when_its_event_cannot_be_written(ingest):
    """Both or neither: an outbox row that fails (here a repeated event id) takes the
    message's INSERT with it."""
    _, store, _ = ingest
    event = message_received(org=ORG)
    row = message_row("m-1", "key-1")
    table, unique = Message.__table__, ("org", "idempotency_key")
    assert insert_with_event(store.db, table, row, unique=unique, outbox=Outbox, event=event)
    again = message_row("m-2", "key-2")  # a new message, the same event id: refused
    with pytest.raises(sa.exc.IntegrityError):
        insert_with_event(store.db, table, again, unique=unique, outbox=Outbox, event=event)
    assert counts(store) == (1, 1)
    repeat = message_row("m-3", "key-1")  # the first one's key: nothing written, False
    assert not insert_with_event(store.db, table, repeat, unique=unique, outbox=Outbox, event=event)
    assert counts(store) == (1, 1)


def message_row(message_id: str, key: str) -> dict:
    return {
        "id": message_id,
        "org": ORG,
        "idempotency_key": key,
        "shape": "editor",
        "contact_uuid": "c-1",
        "urn": None,
        "contact_name": None,
        "flow_uuid": "f-1",
        "node_uuid": None,
        "run_uuid": None,
        "external_id": None,
        "text": "hello",
        "simulation": False,
        "received_at": datetime.now(UTC),
    }


def psycopg_connect(store):
    import psycopg

    url = store.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


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

"""The relay publishes every committed event exactly once to the real RabbitMQ, and catches up
after the broker comes back."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import threading
import time

import pytest
from kombu import Connection
from sqlalchemy import func, select, text

from shared import events as ev
from shared.bus import topology
from shared.bus.connection import kombu_queues
from shared.bus.publisher import ConfirmingPublisher
from shared.relay import Relay
from tests.support import PROBE_QUEUE, Outbox, counted, message_received, probe_store
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def store(pg_settings):
    store = probe_store(pg_settings)
    declare_probe(pg_settings)
    yield store
    store.db.dispose()
    cleanup_probe(pg_settings)


def emit(store, count):
    ids = []
    for i in range(count):
        with store.unit_of_work() as uow:
            event = message_received(f"message {i}")
            uow.add_event(event)
            uow.commit()
            ids.append(event.id)
    return ids


def drain(settings, expected, timeout=30.0):
    """Read the probe queue until ``expected`` messages or the timeout; return their ids."""
    received = []
    main, _ = kombu_queues(settings, PROBE_QUEUE)
    deadline = time.monotonic() + timeout
    with Connection(settings.broker_url) as conn:
        queue = main(conn.default_channel)
        while len(received) < expected and time.monotonic() < deadline:
            message = queue.get(no_ack=False, accept=["json"])
            if message is None:
                time.sleep(0.05)
                continue
            received.append(message.properties["message_id"])
            message.ack()
        # anything beyond what we expected would be a duplicate
        time.sleep(0.3)
        while (extra := queue.get(no_ack=True)) is not None:
            received.append(extra.properties["message_id"])
    return received


def declare_probe(settings):
    with Connection(settings.broker_url) as conn:
        from shared.bus.connection import declare_topology

        declare_topology(conn, settings, [PROBE_QUEUE])


def unpublished(store):
    with store.db.session() as session:
        return session.scalar(
            select(func.count()).select_from(Outbox).where(Outbox.published_at.is_(None))
        )


def cleanup_probe(settings):
    with Connection(settings.broker_url) as conn:
        name = PROBE_QUEUE.name(settings.namespace)
        conn.default_channel.queue_delete(name)
        conn.default_channel.queue_delete(topology.dlq_name(name))


def test_every_committed_event_is_published_once(pg_settings, store):
    ids = emit(store, 300)
    relay = Relay(store, ConfirmingPublisher(pg_settings), batch=100)
    while relay.relay_once():
        pass
    relay.publisher.close()
    assert unpublished(store) == 0
    received = drain(pg_settings, len(ids))
    assert sorted(received) == sorted(ids)  # all of them, none twice


def test_two_relays_share_the_outbox_without_duplicates(pg_settings, store):
    ids = emit(store, 400)
    relays = [Relay(store, ConfirmingPublisher(pg_settings), batch=50) for _ in range(2)]
    threads = [
        threading.Thread(target=lambda r=r: [r.relay_once() for _ in range(20)]) for r in relays
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for relay in relays:
        relay.publisher.close()
    assert unpublished(store) == 0
    assert all(relay.published > 0 for relay in relays)  # both did work
    assert sorted(drain(pg_settings, len(ids))) == sorted(ids)


@contextlib.contextmanager
def running(relay):
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        yield
    finally:
        relay.should_stop = True
        thread.join(timeout=30)


def test_an_idle_relay_only_looks_and_claims_once_rows_wait(pg_settings, store):
    """Idle, the relay sends one cheap indexed query per look, never the locking claim."""
    relay = Relay(store, ConfirmingPublisher(pg_settings), idle=0.01)
    with counted(store.db.engine) as statements, running(relay):
        time.sleep(0.5)
        idle = list(statements)
        ids = emit(store, 20)
        assert eventually(lambda: unpublished(store) == 0)
    assert len(idle) >= 10  # it looked, about every 10 ms
    assert not [s for s in idle if "FOR UPDATE" in s]
    assert any("FOR UPDATE" in s for s in statements[len(idle) :])
    assert sorted(drain(pg_settings, len(ids))) == sorted(ids)


def test_a_relay_that_found_rows_claims_again_without_looking_first(pg_settings, store):
    """While rows keep coming the look would find them anyway: after a claim that found rows
    the relay claims again at once, and after one that found none it goes back to looking."""
    relay = Relay(store, ConfirmingPublisher(pg_settings), idle=0.01)
    with counted(store.db.engine) as statements, running(relay):
        time.sleep(0.2)
        before = len(statements)
        ids = emit(store, 5)
        assert eventually(lambda: unpublished(store) == 0)
        time.sleep(0.2)
    relay_statements = [
        s for s in statements[before:] if s.startswith(("SELECT outbox.", "UPDATE"))
    ]
    after = ["claim" if "FOR UPDATE" in s else "look" for s in relay_statements]
    first = after.index("claim")
    assert after[first + 1] == "claim"  # without a look in between
    last = len(after) - 1 - after[::-1].index("claim")
    assert after[last + 1 :] and set(after[last + 1 :]) == {"look"}
    assert sorted(drain(pg_settings, len(ids))) == sorted(ids)


def test_an_idle_publisher_keeps_its_connection_past_heartbeats_yet_rarely_runs_its_loop(
    pg_settings, store
):
    """Idle, the publisher mostly sleeps (its I/O loop runs once a second, not at every look),
    and that is enough for heartbeats: with a 1 s heartbeat (RabbitMQ drops a connection after
    two missed ones), 4 s of idling later the same connection publishes."""
    publisher = ConfirmingPublisher(pg_settings)
    publisher._params.heartbeat = 1
    emit(store, 1)
    relay = Relay(store, publisher, idle=0.01)
    assert relay.relay_once() == 1  # the connection is open
    connection = publisher._connection
    loops = []
    run_until = publisher._run_until
    publisher._run_until = lambda *args: loops.append(1) or run_until(*args)
    started = time.monotonic()
    while time.monotonic() - started < 4:
        publisher.idle(0.01)
    assert 3 <= len(loops) <= 6  # about once a second, not ~300 times
    publisher._run_until = run_until
    ids = emit(store, 5)
    assert relay.relay_once() == 5
    assert publisher._connection is connection and connection.is_open
    drained = drain(pg_settings, 6)
    assert set(ids) <= set(drained) and len(drained) == 6
    publisher.close()


def test_a_relay_whose_looking_connection_dies_opens_another(pg_settings, store):
    relay = Relay(store, ConfirmingPublisher(pg_settings), idle=0.01)
    with running(relay):
        assert eventually(lambda: relay._look is not None)
        with store.db.engine.connect() as conn:
            pid = relay._look.connection.dbapi_connection.info.backend_pid
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        ids = emit(store, 20)
        assert eventually(lambda: unpublished(store) == 0)
        assert relay.failing is None
    assert sorted(drain(pg_settings, len(ids))) == sorted(ids)


def rabbitmqctl(*args):
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def broker_answers(settings) -> bool:
    try:
        with Connection(settings.broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.mark.broker_restart
def test_events_accepted_while_the_broker_is_stopped_are_published_after_it_returns(
    pg_settings, store
):
    relay = Relay(store, ConfirmingPublisher(pg_settings, timeout=5), batch=100, idle=0.02)
    thread = threading.Thread(target=relay.run)
    thread.start()
    try:
        rabbitmqctl("stop_app")
        ids = emit(store, 200)  # accepted with the broker down: they wait in the outbox
        time.sleep(1.0)
        assert unpublished(store) == 200
        rabbitmqctl("start_app")
        deadline = time.monotonic() + 60
        while unpublished(store) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert unpublished(store) == 0
        assert sorted(drain(pg_settings, len(ids))) == sorted(ids)
    finally:
        rabbitmqctl("start_app")
        relay.should_stop = True
        thread.join(timeout=30)


def test_declaring_the_topology_removes_the_mirror_binding_of_every_labelled_message(
    pg_settings,
):
    """A broker set up by an earlier version bound flowbridge's mirror queue to every
    message.labeled; declaring today's topology removes that binding, so only the events
    published as message.labeled.synced reach it (cases still gets both kinds)."""
    from shared.bus.connection import declare_topology, delete_topology

    earlier = dataclasses.replace(topology.FLOWBRIDGE_MIRROR, keys=(), retired=())
    assert ev.MESSAGE_LABELED in earlier.bindings
    try:
        with Connection(pg_settings.broker_url) as conn:
            declare_topology(conn, pg_settings, [earlier])
            declare_topology(conn, pg_settings)
        plain, synced = message_received("plain"), message_received("synced")
        publisher = ConfirmingPublisher(pg_settings)
        confirmed = publisher.publish(
            [
                (plain.id, ev.MESSAGE_LABELED, plain.body()),
                (synced.id, topology.MESSAGE_LABELED_SYNCED, synced.body()),
            ]
        )
        publisher.close()
        assert sorted(confirmed) == sorted([plain.id, synced.id])
        assert queue_ids(pg_settings, topology.FLOWBRIDGE_MIRROR) == [synced.id]
        assert sorted(queue_ids(pg_settings, topology.CASES_MESSAGES)) == sorted(
            [plain.id, synced.id]
        )
    finally:
        delete_topology(pg_settings)


def queue_ids(settings, spec) -> list[str]:
    """The message ids waiting in a queue (taken off it)."""
    main, _ = kombu_queues(settings, spec)
    found = []
    with Connection(settings.broker_url) as conn:
        queue = main(conn.default_channel)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = queue.get(no_ack=True, accept=["json"])
            if message is None:
                if found:
                    break
                time.sleep(0.05)
                continue
            found.append(message.properties["message_id"])
    return found

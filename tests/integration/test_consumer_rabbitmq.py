"""The kombu consumer base on the real RabbitMQ: ack after commit, DLQ, retries, redelivery."""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection
from sqlalchemy import func, select

from shared.bus.amqp import AmqpWorker, ConfirmingPublisher, declare_topology, kombu_queues
from shared.bus.dispatch import Subscription, TransientError
from tests.support import PROBE_QUEUE, Seen, message_received, probe_store, record
from tests.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(pg_settings):
    """Runs a probe worker with a given handler; yields (start, publish, dlq_depth, seen)."""
    store = probe_store(pg_settings)
    conn = Connection(pg_settings.broker_url)
    declare_topology(conn, pg_settings, [PROBE_QUEUE])
    publisher = ConfirmingPublisher(pg_settings)
    running: list[tuple[AmqpWorker, threading.Thread]] = []
    main, dlq = (q(conn.default_channel) for q in kombu_queues(pg_settings, PROBE_QUEUE))

    def start(handler):
        worker = AmqpWorker(
            pg_settings, [Subscription(PROBE_QUEUE, store, {"message.received": handler})]
        )
        thread = threading.Thread(target=worker.run)
        thread.start()
        running.append((worker, thread))

    def publish(*bodies: tuple[str, bytes]):
        publisher.publish([(i, "message.received", b) for i, b in bodies])

    def depth(queue) -> int:
        return queue.queue_declare(passive=True).message_count

    def seen() -> int:
        with store.db.session() as session:
            return session.scalar(select(func.count()).select_from(Seen))

    yield start, publish, (lambda: depth(dlq)), seen, (lambda: depth(main))
    for worker, thread in running:
        worker.should_stop = True
        thread.join(timeout=30)
    publisher.close()
    for queue in (main, dlq):
        queue.delete()
    conn.release()
    store.db.dispose()


def test_handled_event_is_acked_and_a_redelivery_has_no_effect(broker):
    start, publish, dlq_depth, seen, depth = broker
    start(record)
    event = message_received()
    publish((event.id, event.body()))
    assert eventually(lambda: seen() == 1)
    publish((event.id, event.body()))
    assert eventually(lambda: depth() == 0)
    time.sleep(0.3)
    assert seen() == 1 and dlq_depth() == 0


def test_a_bad_payload_goes_to_the_dlq_at_once_while_others_flow(broker):
    start, publish, dlq_depth, seen, _ = broker
    calls = []
    start(lambda uow, envelope: (calls.append(1), record(uow, envelope)))
    good = message_received()
    publish(("bad-1", b'{"name": "message.received"}'), (good.id, good.body()))
    assert eventually(lambda: dlq_depth() == 1 and seen() == 1)
    assert len(calls) == 1  # the bad one never reached a handler


def test_a_handler_that_always_fails_is_dead_lettered_at_the_delivery_limit(broker, pg_settings):
    start, publish, dlq_depth, seen, _ = broker
    attempts = []

    def poison(uow, envelope):
        attempts.append(envelope.id)
        raise RuntimeError("a bug")

    start(poison)
    event = message_received()
    publish((event.id, event.body()))
    assert eventually(lambda: dlq_depth() == 1, timeout=60)
    assert len(attempts) == pg_settings.delivery_limit + 1  # first delivery + redeliveries


def test_a_transient_failure_is_retried_until_it_works(broker):
    start, publish, dlq_depth, seen, _ = broker
    attempts = []

    def flaky(uow, envelope):
        attempts.append(1)
        if len(attempts) < 4:
            raise TransientError("database restarting")
        record(uow, envelope)

    start(flaky)
    event = message_received()
    publish((event.id, event.body()))
    assert eventually(lambda: seen() == 1)
    assert len(attempts) == 4 and dlq_depth() == 0

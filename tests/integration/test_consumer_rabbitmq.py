"""The kombu consumer base on the real RabbitMQ: ack after commit, DLQ, retries, redelivery."""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection
from sqlalchemy import func, select

from shared.bus.connection import declare_topology, kombu_queues
from shared.bus.consumer import HOLD_FOR, AmqpWorker
from shared.bus.dispatch import Subscription, TransientError
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.events import LABEL_CREATED
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


def test_messages_waiting_when_a_worker_subscribes_are_all_handled(pg_settings):
    """A worker with two queues subscribes one after the other; what the first queue delivers
    while the second subscribes belongs to the first batch. (It was once dropped from the batch
    and acknowledged unhandled by the batch's multiple ack: lost after every reconnection.)"""
    other = QueueSpec("probe", "others", (LABEL_CREATED,))
    store = probe_store(pg_settings)
    conn = Connection(pg_settings.broker_url)
    declare_topology(conn, pg_settings, [PROBE_QUEUE, other])
    publisher = ConfirmingPublisher(pg_settings)
    events = [message_received(text=f"waiting {i}") for i in range(40)]
    publisher.publish([(e.id, "message.received", e.body()) for e in events])
    worker = AmqpWorker(
        pg_settings,
        [
            Subscription(PROBE_QUEUE, store, {"message.received": record}),
            Subscription(other, store, {LABEL_CREATED: record}),
        ],
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        main = kombu_queues(pg_settings, PROBE_QUEUE)[0](conn.default_channel)
        assert eventually(lambda: main.queue_declare(passive=True).message_count == 0)
        assert eventually(lambda: worker.handled == len(events))
        with store.db.session() as session:
            handled = set(session.scalars(select(Seen.event_id)))
        assert handled == {e.id for e in events}
    finally:
        worker.should_stop = True
        thread.join(timeout=30)
        publisher.close()
        conn.release()
        store.db.dispose()


@pytest.mark.parametrize(("batch_wait", "one_batch"), [(0.5, True), (0.0, False)])
def test_messages_arriving_within_the_batch_wait_are_handled_together(
    pg_settings, batch_wait, one_batch
):
    """Eight events published 30 ms apart: with a batch wait of half a second they share one
    transaction; with none, each is handled as it arrives."""
    store = probe_store(pg_settings)
    conn = Connection(pg_settings.broker_url)
    declare_topology(conn, pg_settings, [PROBE_QUEUE])
    publisher = ConfirmingPublisher(pg_settings)
    transactions = []

    def handler(uow, envelope):
        if not any(uow is seen for seen in transactions):
            transactions.append(uow)
        record(uow, envelope)

    settings = pg_settings.with_(batch_wait=batch_wait)
    worker = AmqpWorker(settings, [Subscription(PROBE_QUEUE, store, {"message.received": handler})])
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert eventually(lambda: worker.broker_connected)
        time.sleep(0.2)  # subscribed
        for i in range(8):
            event = message_received(text=f"trickle {i}")
            publisher.publish([(event.id, "message.received", event.body())])
            time.sleep(0.03)
        assert eventually(lambda: worker.handled == 8)
        assert (len(transactions) == 1) is one_batch, len(transactions)
    finally:
        worker.should_stop = True
        thread.join(timeout=30)
        publisher.close()
        for queue in kombu_queues(pg_settings, PROBE_QUEUE):
            queue(conn.default_channel).delete()
        conn.release()
        store.db.dispose()


def first_until_second(bodies) -> set[int]:
    """Holds the event whose text is "first" while no event "second" is in hand."""
    texts = [body["data"]["text"] for body in bodies]
    return set() if "second" in texts else {i for i, t in enumerate(texts) if t == "first"}


@pytest.fixture
def holding(pg_settings):
    """A probe worker whose subscription holds "first" back for "second"; yields
    (worker, publish(text), transactions: the texts handled in each transaction)."""
    store = probe_store(pg_settings)
    conn = Connection(pg_settings.broker_url)
    declare_topology(conn, pg_settings, [PROBE_QUEUE])
    publisher = ConfirmingPublisher(pg_settings)
    transactions: list[tuple[object, list[str]]] = []

    def handler(uow, envelope):
        if not transactions or transactions[-1][0] is not uow:
            transactions.append((uow, []))
        transactions[-1][1].append(envelope.data["text"])
        record(uow, envelope)

    subscription = Subscription(
        PROBE_QUEUE, store, {"message.received": handler}, hold=first_until_second
    )
    worker = AmqpWorker(pg_settings.with_(batch_wait=0.02), [subscription])
    thread = threading.Thread(target=worker.run)
    thread.start()

    def publish(text: str) -> None:
        event = message_received(text=text)
        publisher.publish([(event.id, "message.received", event.body())])

    try:
        assert eventually(lambda: worker.broker_connected)
        time.sleep(0.2)  # subscribed
        yield worker, publish, lambda: [texts for _, texts in transactions]
    finally:
        worker.should_stop = True
        thread.join(timeout=30)
        publisher.close()
        main = kombu_queues(pg_settings, PROBE_QUEUE)[0](conn.default_channel)
        # Nothing handled comes back when the worker's channel closes: all of it was acked.
        assert main.queue_declare(passive=True).message_count == 0
        for queue in kombu_queues(pg_settings, PROBE_QUEUE):
            queue(conn.default_channel).delete()
        conn.release()
        store.db.dispose()


def test_an_event_held_for_the_next_is_handled_with_it_in_one_transaction(holding):
    """ "first" waits for "second" (published 0.1 s later, past the batch wait of 20 ms);
    "other", in between, is handled at once, and acknowledged only with "first": a
    ``multiple`` ack of it would have acknowledged "first" unhandled."""
    worker, publish, transactions = holding
    publish("first")
    time.sleep(0.05)
    publish("other")
    assert eventually(lambda: worker.handled == 1)
    assert transactions() == [["other"]]
    assert len(worker._unacked) == 1  # "other", waiting for the ack of "first"
    publish("second")
    assert eventually(lambda: worker.handled == 3)
    assert transactions() == [["other"], ["first", "second"]]
    assert worker._unacked == []


def test_an_event_whose_next_never_comes_is_handled_after_the_hold(holding):
    worker, publish, transactions = holding
    started = time.monotonic()
    publish("first")
    assert eventually(lambda: worker.handled == 1)
    assert time.monotonic() - started >= HOLD_FOR - 0.05  # it was held, then let go
    assert transactions() == [["first"]]

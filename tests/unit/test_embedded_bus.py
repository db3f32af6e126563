"""The embedded bus keeps RabbitMQ's promises: routing, ack after commit, retry, DLQ, restart."""

import threading

from sqlalchemy import func, select

from shared.bus import topology
from shared.bus.dispatch import Subscription, TransientError
from shared.bus.embedded import EmbeddedBus, EmbeddedWorker
from shared.bus.topology import QueueSpec
from shared.events import MESSAGE_RECEIVED
from tests.support import PROBE_QUEUE, Seen, message_received, probe_store, record
from tests.waiting import eventually


def make_bus(settings, handler=record):
    bus = EmbeddedBus(settings, queues=(PROBE_QUEUE,))
    store = probe_store(settings)
    return bus, store, Subscription(PROBE_QUEUE, store, {"message.received": handler})


def publish(bus, *events):
    return bus.publish([(e.id, e.name, e.body()) for e in events])


def seen_count(store):
    with store.db.session() as session:
        return session.scalar(select(func.count()).select_from(Seen))


def test_published_event_is_handled_once_even_if_published_twice(settings):
    bus, store, sub = make_bus(settings)
    event = message_received()
    publish(bus, event)
    publish(bus, event)  # a relay that crashed before marking the row republishes it
    while bus.consume_one(sub, lambda: False):
        pass
    assert seen_count(store) == 1
    assert bus.depth(PROBE_QUEUE.name(settings.namespace)) == 0


def test_events_nobody_listens_to_are_not_stored(settings):
    bus, _, _ = make_bus(settings)
    event = message_received()
    body = event.to_json() | {"name": "case.opened"}
    bus.publish([(event.id, "case.opened", str(body).encode())])
    assert bus.depth(PROBE_QUEUE.name(settings.namespace)) == 0


def test_bad_payload_goes_to_the_dlq_at_once(settings):
    bus, store, sub = make_bus(settings)
    bus.publish([("x", "message.received", b'{"not": "an envelope"}')])
    assert bus.consume_one(sub, lambda: False)
    queue = PROBE_QUEUE.name(settings.namespace)
    assert bus.depth(queue) == 0 and bus.depth(topology.dlq_name(queue)) == 1


def test_failing_handler_is_retried_then_dead_lettered(settings):
    calls = []

    def always_fails(uow, envelope):
        calls.append(envelope.id)
        raise RuntimeError("bug")

    settings = settings.with_(delivery_limit=3)
    bus, store, sub = make_bus(settings, always_fails)
    publish(bus, message_received())
    queue = PROBE_QUEUE.name(settings.namespace)
    for _ in range(3):
        bus._connect().execute("UPDATE deliveries SET visible_at = 0")  # skip the backoff
        assert bus.consume_one(sub, lambda: False)
    assert len(calls) == 3
    assert bus.depth(queue) == 0 and bus.depth(topology.dlq_name(queue)) == 1
    assert seen_count(store) == 0  # the failed attempts left nothing behind


def test_transient_failure_is_retried_in_place(settings):
    attempts = []

    def flaky(uow, envelope):
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("flow engine 503")
        record(uow, envelope)

    bus, store, sub = make_bus(settings, flaky)
    publish(bus, message_received())
    assert bus.consume_one(sub, lambda: False)
    assert len(attempts) == 3 and seen_count(store) == 1


def test_a_message_leased_by_a_dead_process_is_delivered_after_restart(settings):
    bus, store, sub = make_bus(settings)
    publish(bus, message_received())
    assert bus._claim(PROBE_QUEUE.name(settings.namespace)) is not None  # then the process dies
    restarted, _, _ = make_bus(settings)
    assert restarted.consume_one(sub, lambda: False) is False  # still leased
    assert restarted.recover() == 1
    assert restarted.consume_one(sub, lambda: False)
    assert seen_count(store) == 1


def test_a_long_handler_holds_up_neither_the_other_queues_nor_the_liveness(settings):
    """An export's build takes minutes: meanwhile the worker's other queues are consumed and
    its ``last_beat`` (what /healthz reads) goes on moving."""
    slow_queue = QueueSpec("probe-slow", "messages", (MESSAGE_RECEIVED,))
    bus = EmbeddedBus(settings, queues=(PROBE_QUEUE, slow_queue))
    quick_store, slow_store = probe_store(settings), probe_store(settings, "probe_slow")
    started, release = threading.Event(), threading.Event()

    def slow(uow, envelope):
        started.set()
        assert release.wait(10)
        record(uow, envelope)

    worker = EmbeddedWorker(
        bus,
        [
            Subscription(slow_queue, slow_store, {"message.received": slow}, long=True),
            Subscription(PROBE_QUEUE, quick_store, {"message.received": record}),
        ],
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        publish(bus, message_received("first"))
        assert started.wait(5)
        beat = worker.last_beat
        publish(bus, message_received("second"))
        eventually(lambda: seen_count(quick_store) == 2, timeout=5)
        eventually(lambda: worker.last_beat > beat, timeout=5)
    finally:
        release.set()
        eventually(lambda: seen_count(slow_store) == 2, timeout=10)
        worker.should_stop = True
        thread.join(10)
    assert not thread.is_alive()

"""A long subscription on the real RabbitMQ: a handler running past two heartbeat intervals keeps
its connection (the message is handled once and acknowledged), the worker's other queues flow
meanwhile, its liveness stays fresh, and a stop waits for the handler, within a bound.

The worker's heartbeat is 2 s here: without the helper thread, a handler of 8 s held the
consuming thread silent, the connection was dropped and the message handled again."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import pytest
from kombu import Connection
from sqlalchemy import func, select

from shared.bus.connection import declare_topology, kombu_queues
from shared.bus.consumer import AmqpWorker
from shared.bus.dispatch import Subscription
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.events import EXPORT_REQUESTED, Envelope, new_event
from tests.support import PROBE_QUEUE, Seen, message_received, probe_store, record
from tests.waiting import eventually

pytestmark = pytest.mark.integration

LONG_QUEUE = QueueSpec("probe", "long", (EXPORT_REQUESTED,))
HEARTBEAT = 2


class CountingWorker(AmqpWorker):
    """Counts its connections (a second one means the first was dropped) and the deliveries of
    each event (the inbox hides a redelivery from the handler once its first run committed)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0
        self.deliveries: collections.Counter[str] = collections.Counter()

    def on_connection_revived(self) -> None:
        self.connections += 1
        super().on_connection_revived()

    def _on_message(self, subscription, body, message) -> None:
        self.deliveries[body["id"]] += 1
        super()._on_message(subscription, body, message)


def long_event() -> Envelope:
    data = {"export_id": "8a0c6a7e-0000-4000-8000-00000000000e", "kind": "cases", "format": "csv"}
    return new_event(EXPORT_REQUESTED, org="demo", producer="test", data=data)


@pytest.fixture
def rig(pg_settings):
    """Yields start(long_handler, **worker_options) -> (worker, thread), publish, long_depth,
    seen; stops the workers and deletes the probe queues afterwards."""
    store = probe_store(pg_settings)
    conn = Connection(pg_settings.broker_url)
    declare_topology(conn, pg_settings, [PROBE_QUEUE, LONG_QUEUE])
    publisher = ConfirmingPublisher(pg_settings)
    running: list[tuple[AmqpWorker, threading.Thread]] = []

    def start(long_handler: Callable, **options) -> tuple[CountingWorker, threading.Thread]:
        worker = CountingWorker(
            pg_settings,
            [
                Subscription(PROBE_QUEUE, store, {"message.received": record}),
                Subscription(LONG_QUEUE, store, {EXPORT_REQUESTED: long_handler}, long=True),
            ],
            heartbeat=HEARTBEAT,
            **options,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running.append((worker, thread))
        return worker, thread

    def publish(event: Envelope) -> None:
        publisher.publish([(event.id, event.name, event.body())])

    def long_depth() -> int:
        queue = kombu_queues(pg_settings, LONG_QUEUE)[0](conn.default_channel)
        return queue.queue_declare(passive=True).message_count

    def seen(event: Envelope) -> int:
        with store.db.session() as session:
            query = select(func.count()).select_from(Seen).where(Seen.event_id == event.id)
            return session.scalar(query)

    yield start, publish, long_depth, seen
    for worker, thread in running:
        worker.should_stop = True
        thread.join(timeout=30)
    publisher.close()
    for spec in (PROBE_QUEUE, LONG_QUEUE):
        for queue in kombu_queues(pg_settings, spec):
            queue(conn.default_channel).delete()
    conn.release()
    store.db.dispose()


def test_a_handler_longer_than_two_heartbeats_keeps_its_connection_and_runs_once(rig):
    start, publish, long_depth, seen = rig
    calls: list[str] = []
    started, finished = threading.Event(), threading.Event()

    def slow(uow, envelope):
        calls.append(envelope.id)
        started.set()
        time.sleep(4 * HEARTBEAT)  # well past the two intervals that drop a silent connection
        record(uow, envelope)
        finished.set()

    worker, thread = start(slow)
    export, message = long_event(), message_received()
    publish(export)
    assert started.wait(30)
    publish(message)
    # The other queue flows while the long handler runs: it is handled before the long one ends.
    assert eventually(lambda: seen(message) == 1, timeout=3 * HEARTBEAT)
    assert not finished.is_set()
    time.sleep(2 * HEARTBEAT)
    assert not finished.is_set()
    assert time.monotonic() - worker.last_beat < 1.0  # /healthz sees the loop turning
    assert finished.wait(30)
    assert eventually(lambda: worker.handled == 2, timeout=10)
    time.sleep(HEARTBEAT)  # a redelivery, had the connection dropped, would be handled by now
    worker.should_stop = True
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert calls == [export.id] and worker.deliveries[export.id] == 1  # never redelivered
    assert seen(export) == 1 and seen(message) == 1
    assert worker.connections == 1  # the connection was never dropped
    assert long_depth() == 0  # acknowledged: with the worker gone, nothing came back


def test_a_stop_waits_for_the_long_handler_and_acknowledges_it(rig):
    start, publish, long_depth, seen = rig
    started = threading.Event()

    def slow(uow, envelope):
        started.set()
        time.sleep(3)
        record(uow, envelope)

    worker, thread = start(slow, long_grace=20)
    export = long_event()
    publish(export)
    assert started.wait(30)
    worker.should_stop = True
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert worker.handled == 1 and seen(export) == 1
    assert long_depth() == 0


def test_a_long_handler_past_the_grace_gives_its_message_back(rig):
    start, publish, long_depth, seen = rig
    started, release = threading.Event(), threading.Event()

    def stuck(uow, envelope):
        started.set()
        release.wait(30)
        raise RuntimeError("gave up")  # nothing committed, whenever it ends

    worker, thread = start(stuck, long_grace=1)
    export = long_event()
    publish(export)
    try:
        assert started.wait(30)
        worker.should_stop = True
        began = time.monotonic()
        thread.join(timeout=30)
        assert not thread.is_alive()
        assert time.monotonic() - began < 10  # bounded by the grace, not by the handler
        assert worker.handled == 0 and seen(export) == 0
        assert eventually(lambda: long_depth() == 1, timeout=10)  # back in its queue, unacked
    finally:
        release.set()

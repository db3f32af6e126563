"""The labeler on the real RabbitMQ and PostgreSQL: every step a production deployment takes."""

from __future__ import annotations

import threading
import time

import pytest
from kombu import Connection

from services.labeler.models import MIGRATIONS, open_store
from services.labeler.worker import subscriptions
from shared import events as ev
from shared.bus import topology
from shared.bus.connection import declare_topology, kombu_queues
from shared.bus.consumer import AmqpWorker
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.events import read_event
from shared.relay import Relay
from tests.labeler_helpers import keywords, label_deleted, label_event, message_received

pytestmark = pytest.mark.integration

# Every message.labeled, as cases binds them: with a synced label it goes out under its own key.
WATCH = QueueSpec(
    "watch",
    "labeled",
    (ev.MESSAGE_LABELED,),
    keys=(ev.MESSAGE_LABELED, topology.MESSAGE_LABELED_SYNCED),
)


@pytest.fixture
def pipeline(pg_settings):
    """A labeler worker and relay running in threads; yields (publish, read_labeled)."""
    store = open_store(pg_settings)
    store.db.migrate(MIGRATIONS)
    with Connection(pg_settings.broker_url) as conn:
        declare_topology(conn, pg_settings)
        declare_topology(conn, pg_settings, [WATCH])
    worker = AmqpWorker(pg_settings, subscriptions(pg_settings, store))
    relay = Relay(store, ConfirmingPublisher(pg_settings), idle=0.01)
    threads = [threading.Thread(target=worker.run), threading.Thread(target=relay.run)]
    for thread in threads:
        thread.start()
    publisher = ConfirmingPublisher(pg_settings)
    connection = Connection(pg_settings.broker_url)
    watch = kombu_queues(pg_settings, WATCH)[0](connection.default_channel)

    def publish(*events):
        assert len(publisher.publish([(e.id, e.name, e.body()) for e in events])) == len(events)

    def read_labeled(expected, timeout=20.0):
        found, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = watch.get(accept=["json"])
            if message is None:
                if len(found) >= expected:
                    time.sleep(0.5)  # long enough for a duplicate to show up
                    if (message := watch.get(accept=["json"])) is None:
                        break
                else:
                    time.sleep(0.05)
                    continue
            found.append(read_event(message.body))
            message.ack()
        return found

    try:
        yield publish, read_labeled
    finally:
        worker.should_stop = relay.should_stop = True
        for thread in threads:
            thread.join(timeout=30)
        store.db.dispose()
        publisher.close()
        watch.delete()
        connection.release()


def test_a_message_on_the_broker_yields_exactly_one_labeled_event(pipeline):
    publish, read_labeled = pipeline
    help_label = label_event("Help", [keywords("ajuda", "socorro")], synced=True)
    publish(help_label)
    time.sleep(0.5)  # label changes apply to messages received after them
    message = message_received("Socorro, preciso falar com alguém")
    publish(message)
    [labeled] = read_labeled(1)
    assert labeled.data["message_id"] == message.data["message_id"]
    assert labeled.data["labels"] == [help_label.data["label_uuid"]]
    assert labeled.data["synced"] == [help_label.data["label_uuid"]]
    assert labeled.causation_id == message.id
    assert labeled.correlation_id == message.correlation_id


def test_a_redelivered_event_yields_nothing_more(pipeline):
    publish, read_labeled = pipeline
    message = message_received("oi")
    publish(message)
    assert len(read_labeled(1)) == 1
    publish(message)  # the same event id again, as after a relay crash
    assert read_labeled(0, timeout=3) == []


def test_a_deleted_label_stops_labelling(pipeline):
    publish, read_labeled = pipeline
    created = label_event("Help", [keywords("ajuda")], version=1)
    publish(created)
    time.sleep(0.5)
    publish(message_received("ajuda"))
    assert read_labeled(1)[0].data["labels"] == [created.data["label_uuid"]]
    publish(label_deleted(created.data["label_uuid"], version=2))
    time.sleep(0.5)
    publish(message_received("ajuda"))
    assert read_labeled(1)[0].data["labels"] == []

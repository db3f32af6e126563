"""A poison message on the real RabbitMQ: dead-lettered after exactly the delivery limit while the
other traffic flows, then seen, replayed and purged with `upartners dlq`."""

from __future__ import annotations

import collections
import threading

import pytest
from sqlalchemy import select

from services import cli
from shared.bus import dlq, topology
from shared.bus.consumer import AmqpWorker
from shared.bus.dispatch import Subscription
from shared.bus.publisher import ConfirmingPublisher
from tests.labeler_helpers import message_received
from tests.support import Seen, probe_store, record
from tests.waiting import eventually

pytestmark = pytest.mark.fault

QUEUE = topology.LABELER_MESSAGES
GOOD = 200


class CountingWorker(AmqpWorker):
    """The real consumer, noting the broker's delivery count of each message it receives (the
    handler alone cannot tell: a batch that fails is handled again one event at a time)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deliveries: collections.defaultdict[str, list[int]] = collections.defaultdict(list)

    def _on_message(self, subscription, body, message):
        count = int((message.headers or {}).get("x-delivery-count", 0))
        self.deliveries[message.properties.get("message_id")].append(count)
        super()._on_message(subscription, body, message)


def test_a_poison_event_is_dead_lettered_at_the_limit_then_replayed_and_purged(
    pg_settings, monkeypatch, capsys
):
    """The real consumer (AmqpWorker) on the real labeler.messages queue, with a probe handler
    that raises a plain exception for one chosen event id and records every other event: a bug
    that hits one event, the case the delivery limit exists for. (A probe handler rather than
    the labeler's, because the labeler has no input it fails on forever: bad input is rejected
    at once, which the purge step below uses.) Fixing the bug is emptying ``broken``."""
    store = probe_store(pg_settings)
    broken: set[str] = set()

    def handler(uow, envelope):
        if envelope.id in broken:
            raise RuntimeError("a bug that hits one event")
        record(uow, envelope)

    subscription = Subscription(QUEUE, store, {"message.received": handler})
    worker = CountingWorker(pg_settings, [subscription])
    thread = threading.Thread(target=worker.run, name="worker")
    publisher = ConfirmingPublisher(pg_settings)  # declares every queue and DLQ on first use
    letters = None
    env = {
        "UPARTNERS_BROKER_URL": pg_settings.broker_url,
        "UPARTNERS_DATABASE_URL": pg_settings.database_url,
        "UPARTNERS_NAMESPACE": pg_settings.namespace,
        "UPARTNERS_DELIVERY_LIMIT": str(pg_settings.delivery_limit),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def seen() -> collections.Counter[str]:
        with store.db.session() as session:
            return collections.Counter(session.scalars(select(Seen.event_id)))

    def publish(*events):
        assert len(publisher.publish([(e.id, e.name, e.body()) for e in events])) == len(events)

    try:
        thread.start()
        letters = dlq.open_dead_letters(pg_settings)
        poison = message_received("poison")
        broken.add(poison.id)
        good = [message_received(f"good {i}") for i in range(GOOD)]
        publish(*good[: GOOD // 2], poison, *good[GOOD // 2 :])

        assert eventually(lambda: letters.depth(QUEUE) == 1, timeout=40), worker.deliveries
        # the first delivery and (limit) redeliveries, then dead: not one more, not one less
        limit = pg_settings.delivery_limit
        assert worker.deliveries[poison.id] == list(range(limit + 1))
        assert eventually(lambda: sum(seen().values()) == GOOD, timeout=10)
        counts = seen()
        assert set(counts) == {e.id for e in good} and set(counts.values()) == {1}
        [letter] = letters.peek(QUEUE, 5)
        assert (letter.event_id, letter.event, letter.org) == (poison.id, poison.name, poison.org)
        assert (letter.reason, letter.deaths) == ("delivery_limit", 1)

        # the worker kept going
        later = [message_received(f"later {i}") for i in range(20)]
        publish(*later)
        assert eventually(lambda: sum(seen().values()) == GOOD + len(later), timeout=10)
        assert thread.is_alive()

        capsys.readouterr()
        assert cli.main(["dlq", "list", "--show", "5"]) == 0
        out = capsys.readouterr().out
        assert any(line.split() == ["labeler.messages", "1"] for line in out.splitlines()), out
        assert poison.id in out and "delivery_limit, 1x" in out
        assert "poison" not in out  # the text of a message is never shown
        # looking did not take it away (given back at once; the queue counts it again soon)
        assert eventually(lambda: letters.depth(QUEUE) == 1, timeout=5)

        # replay, with the bug fixed: it reaches the labeler's queue only, and is handled once
        cases_queue = topology.CASES_MESSAGES  # also bound to message.received, no consumer
        cases_before = letters._count(cases_queue.name(pg_settings.namespace))
        broken.clear()
        assert cli.main(["dlq", "replay", "labeler.messages"]) == 0
        assert "1 dead messages replayed" in capsys.readouterr().out
        assert eventually(lambda: seen()[poison.id] == 1, timeout=10)
        # the same message (message_id kept), with a fresh delivery count in its queue
        assert worker.deliveries[poison.id][limit + 1 :] == [0]
        assert letters.depth(QUEUE) == 0
        assert letters._count(cases_queue.name(pg_settings.namespace)) == cases_before

        # a body that is not an event is dead at once; purge asks for --yes
        assert publisher.publish([("not-an-event", "message.received", b"\x00 secret")])
        assert eventually(lambda: letters.depth(QUEUE) == 1, timeout=10)
        assert cli.main(["dlq", "purge", f"{pg_settings.namespace}.labeler.messages"]) == 1
        assert "would delete 1 dead messages; add --yes" in capsys.readouterr().err
        assert letters.depth(QUEUE) == 1
        assert cli.main(["dlq", "purge", "labeler.messages", "--yes"]) == 0
        assert "1 dead messages deleted" in capsys.readouterr().out
        assert letters.depth(QUEUE) == 0
        assert cli.main(["dlq", "purge", "labeler.nope", "--yes"]) == 2
        assert sum(seen().values()) == GOOD + len(later) + 1
    finally:
        worker.should_stop = True
        thread.join(timeout=30)
        publisher.close()
        if letters is not None:
            letters.close()
        store.db.dispose()
    assert not thread.is_alive()

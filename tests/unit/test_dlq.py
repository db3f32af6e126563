"""Dead-letter tools on the embedded bus: list, replay, purge, and the `upartners dlq` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from services import cli
from shared.bus import dlq, topology
from shared.bus.dispatch import Subscription
from shared.bus.embedded import EmbeddedBus
from tests.labeler_helpers import message_received
from tests.support import Seen, probe_store, record

QUEUE = topology.LABELER_MESSAGES  # a real queue, so that the command lists it

SECRET_TEXT = "my secret is 555-0100"


def kill(bus, subscription) -> None:
    """Consume until the queue is empty, skipping the retry backoff."""
    while True:
        bus._connect().execute("UPDATE deliveries SET visible_at = 0 WHERE queue NOT LIKE '%.dlq'")
        if not bus.consume_one(subscription, lambda: False):
            return


@pytest.fixture
def world(settings):
    """An embedded bus with two dead messages on labeler.messages (one poison, one not an event),
    a handler that fails for the poison one until ``fixed`` is set."""
    settings = settings.with_(delivery_limit=3)
    bus = EmbeddedBus(settings)
    store = probe_store(settings)
    broken: set[str] = set()

    def handler(uow, envelope):
        if envelope.id in broken:
            raise RuntimeError("a bug")
        record(uow, envelope)

    subscription = Subscription(QUEUE, store, {"message.received": handler})
    poison, good = message_received(SECRET_TEXT), message_received()
    broken.add(poison.id)
    bus.publish([(e.id, e.name, e.body()) for e in (poison, good)])
    bus.publish([("not-json", "message.received", b"\xff" + SECRET_TEXT.encode())])
    kill(bus, subscription)
    yield settings, bus, store, subscription, poison, broken
    bus.close()
    store.db.dispose()


def seen(store, event_id=None) -> int:
    query = select(func.count()).select_from(Seen)
    if event_id:
        query = query.where(Seen.event_id == event_id)
    with store.db.session() as session:
        return session.scalar(query)


def dead_depth(bus, settings) -> int:
    return bus.depth(topology.dlq_name(QUEUE.name(settings.namespace)))


def test_list_shows_each_queue_and_what_died_without_the_text(world):
    settings, bus, store, _, poison, _ = world
    assert seen(store) == 1 and dead_depth(bus, settings) == 2
    letters = dlq.open_dead_letters(settings)
    try:
        states = dlq.status(letters, topology.QUEUES, show=5)
    finally:
        letters.close()
    assert [s.spec for s in states] == list(topology.QUEUES)
    by_queue = {s.spec.consumer: s for s in states}
    assert by_queue["labeler.messages"].depth == 2
    assert all(s.depth == 0 for name, s in by_queue.items() if name != "labeler.messages")
    first, second = by_queue["labeler.messages"].dead
    assert (first.event, first.event_id, first.org) == ("message.received", poison.id, poison.org)
    assert first.correlation_id == poison.correlation_id
    assert first.reason == "delivery_limit" and first.deliveries == 3
    assert abs((datetime.now(UTC) - first.died_at).total_seconds()) < 60
    assert (second.event, second.event_id) == ("(not an event)", "not-json")
    assert second.reason == "rejected"
    listing = dlq.format_listing(states)
    assert poison.id in listing and "labeler.messages" in listing
    assert "555" not in listing and "secret" not in listing


def test_replay_sends_dead_messages_back_once_and_the_fixed_handler_takes_them(world):
    settings, bus, store, subscription, poison, broken = world
    letters = dlq.open_dead_letters(settings)
    try:
        assert letters.replay(QUEUE, limit=1) == 1  # the oldest: the poison event
        assert dead_depth(bus, settings) == 1
        broken.clear()  # the bug is fixed
        kill(bus, subscription)
        assert seen(store, poison.id) == 1
        # the rest dies again (not an event), and is not replayed in a loop
        assert letters.replay(QUEUE) == 1
        kill(bus, subscription)
        assert dead_depth(bus, settings) == 1
    finally:
        letters.close()


def test_a_replayed_message_gets_its_full_delivery_count_again(world):
    settings, bus, store, subscription, poison, _ = world
    bus.replay_dead(QUEUE.name(settings.namespace))
    queue = QUEUE.name(settings.namespace)
    deliveries = bus._connect().execute(
        "SELECT deliveries FROM deliveries WHERE queue = ?", (queue,)
    )
    assert [row[0] for row in deliveries] == [0, 0]
    kill(bus, subscription)  # still broken: three more deliveries, then dead again
    assert dead_depth(bus, settings) == 2 and seen(store, poison.id) == 0


def test_cli_list_replay_and_purge(world, monkeypatch, capsys):
    settings, bus, store, subscription, poison, broken = world
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UPARTNERS_NAMESPACE", settings.namespace)
    monkeypatch.setenv("UPARTNERS_DELIVERY_LIMIT", "3")
    monkeypatch.delenv("UPARTNERS_BROKER_URL", raising=False)

    assert cli.main(["dlq", "list", "--show", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split() == ["labeler.messages", "2"] for line in lines)
    assert any(line.split() == ["cases.messages", "0"] for line in lines)
    assert poison.id in out and "delivery_limit" in out and "after 3 deliveries" in out
    assert "not-json" not in out and "and 1 more" in out
    assert SECRET_TEXT not in out and "555" not in out

    broken.clear()
    full_name = f"{settings.namespace}.labeler.messages"
    assert cli.main(["dlq", "replay", full_name, "--limit", "1"]) == 0
    assert "1 dead messages replayed" in capsys.readouterr().out
    kill(bus, subscription)
    assert seen(store, poison.id) == 1

    assert cli.main(["dlq", "purge", "labeler.messages"]) == 1
    assert "would delete 1 dead messages" in capsys.readouterr().err
    assert dead_depth(bus, settings) == 1
    assert cli.main(["dlq", "purge", "labeler.messages", "--yes"]) == 0
    assert "1 dead messages deleted" in capsys.readouterr().out
    assert dead_depth(bus, settings) == 0


def test_cli_unknown_queue_is_a_clear_error(world, monkeypatch, capsys):
    settings = world[0]
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("UPARTNERS_BROKER_URL", raising=False)
    assert cli.main(["dlq", "replay", "labeler.nothing"]) == 2
    err = capsys.readouterr().err
    assert "no queue 'labeler.nothing'" in err and "labeler.messages" in err


def test_cli_without_a_bus_file_says_so_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delenv("UPARTNERS_BROKER_URL", raising=False)
    assert cli.main(["dlq", "list"]) == 1
    assert "no embedded bus" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_find_queue_accepts_short_full_and_dlq_names():
    assert dlq.find_queue("labeler.messages", "ns") is QUEUE
    assert dlq.find_queue("ns.labeler.messages", "ns") is QUEUE
    assert dlq.find_queue("ns.labeler.messages.dlq", "ns") is QUEUE
    with pytest.raises(dlq.UnknownQueue):
        dlq.find_queue("other.labeler.messages", "ns")


def test_describe_shows_only_ids_and_names():
    body = (
        b'{"id": "e1", "name": "message.received", "org": "unicef-br", "correlation_id": "c1",'
        b' "data": {"text": "call me on 555-0100"}}'
    )
    letter = dlq.describe(body)
    assert (letter.event, letter.event_id, letter.org, letter.correlation_id) == (
        "message.received",
        "e1",
        "unicef-br",
        "c1",
    )
    free_text = dlq.describe(b'{"id": "call me on 555-0100", "name": "x"}', message_id="m")
    assert free_text.event_id == "?"
    phone = dlq.describe(b'{"id": "+5511987654321", "org": "whatsapp:5511987654321"}')
    assert (phone.event_id, phone.org) == ("?", "?")
    digits = "12345678-1234-4234-8234-123456789012"  # a UUID may have 8 digits in a row
    assert dlq.describe(json.dumps({"id": digits}).encode()).event_id == digits
    assert dlq.describe(b"[1, 2]", message_id="m").event == "(not an event)"


def test_amqp_death_reads_the_x_death_headers():
    at = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    headers = {
        "x-death": [{"count": 2, "reason": "delivery_limit", "queue": "q", "time": at}],
        "x-first-death-reason": "rejected",
        "x-delivery-count": 3,
    }
    assert dlq.amqp_death(headers) == {"died_at": at, "reason": "delivery_limit", "deaths": 2}
    assert dlq.amqp_death({"x-first-death-reason": "rejected"})["reason"] == "rejected"
    assert dlq.amqp_death(None) == {"died_at": None, "reason": None, "deaths": None}
    assert "x-delivery-count" not in dlq.replay_headers(headers)
    assert dlq.replay_headers(headers)["x-death"] == headers["x-death"]

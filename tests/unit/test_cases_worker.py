"""The cases worker on the embedded bus: every event its queues carry has a handler; events
published in any order and more than once converge; a bad event is dead-lettered."""

from __future__ import annotations

import json

from services.cases.worker import FLOWBRIDGE_HANDLERS, MESSAGE_HANDLERS
from shared.bus import topology
from shared.bus.embedded import EmbeddedBus
from shared.bus.topology import CASES_DELIVERY, CASES_MESSAGES
from shared.events import MESSAGE_LABELED, new_event
from tests.cases_helpers import ids, message_labeled, message_received


def test_every_event_of_the_cases_queues_has_a_handler():
    assert set(MESSAGE_HANDLERS) == set(CASES_MESSAGES.events)
    assert set(FLOWBRIDGE_HANDLERS) == set(CASES_DELIVERY.events)


def drain(bus, world):
    subs = list(world.subscriptions.values())
    while any(bus.consume_one(sub, lambda: False) for sub in subs):
        pass


def test_events_on_the_embedded_bus_reach_the_inbox_once(world, settings):
    label = world.label()
    agent = world.user(world.partner(restricted=True, labels=(label,)))
    bus = EmbeddedBus(settings)
    try:
        received = message_received()
        labeled = message_labeled(received, [label])
        events = [labeled, received, labeled]  # out of order, and once more
        bus.publish([(e.id, e.name, e.body()) for e in events])
        drain(bus, world)
        assert ids(world.ok(world.get(agent, "/api/v1/messages"))) == [received.data["message_id"]]
        assert bus.depth(CASES_MESSAGES.name(settings.namespace)) == 0
    finally:
        bus.close()


def test_an_event_that_can_never_be_handled_is_dead_lettered(world, settings):
    bus = EmbeddedBus(settings)
    try:
        good = new_event(
            MESSAGE_LABELED,
            org="unicef-br",
            producer="labeler",
            data={"message_id": "m", "contact_uuid": "c", "labels": []},
        )
        broken = good.to_json() | {"data": {"message_id": "m"}}  # no contact, no labels
        bus.publish([(good.id, good.name, json.dumps(broken).encode())])
        drain(bus, world)
        queue = CASES_MESSAGES.name(settings.namespace)
        assert bus.depth(queue) == 0 and bus.depth(topology.dlq_name(queue)) == 1
    finally:
        bus.close()

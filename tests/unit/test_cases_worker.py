"""The cases worker on the embedded bus: every event its queues carry has a handler; events
published in any order and more than once converge; a bad event is dead-lettered."""

from __future__ import annotations

import json

from sqlalchemy import select

from services.cases.models import Contact, Message
from services.cases.worker import FLOWBRIDGE_HANDLERS, MESSAGE_HANDLERS
from shared.bus import topology
from shared.bus.dispatch import Outcome, dispatch_batch
from shared.bus.embedded import EmbeddedBus
from shared.bus.topology import CASES_DELIVERY, CASES_MESSAGES
from shared.events import MESSAGE_LABELED, new_event
from tests.cases_helpers import at, ids, message_labeled, message_received, new_uuid


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


def test_a_batch_ends_as_handling_its_events_one_by_one_would(world):
    """A worker's batch reads its contacts, messages and open cases up front (prepare): a
    contact with an open case still gets its message in the case, a new contact keeps the
    fields of its newest message whatever the order, a label may come before its message."""
    label = world.label()
    partner = world.partner(restricted=True, labels=(label,))
    agent = world.user(partner)
    helped = world.message([label], received_at=at(0))
    case = world.open_case(agent, helped, partner)
    helped_contact = message_contact(world, helped)
    into_case = message_received(contact=helped_contact, received_at=at(1))
    contact = new_uuid()
    newer = message_received(contact=contact, received_at=at(3), fields={"age": "16"})
    older = message_received(contact=contact, received_at=at(2), fields={"age": "15"})
    early = message_received(received_at=at(4))
    batch = [
        into_case,
        newer,
        older,
        message_labeled(early, [label]),
        early,
        *(message_labeled(e, [label]) for e in (into_case, newer, older)),
    ]
    outcomes = dispatch_batch(world.subscriptions["messages"], [e.body() for e in batch])
    assert outcomes == [Outcome.ACK] * len(batch)
    inbox = ids(world.ok(world.get(agent, "/api/v1/messages", limit=50)))
    assert sorted(inbox) == sorted(m.data["message_id"] for m in (newer, older, early))
    with world.store.db.session() as session:
        in_case = session.get(Message, into_case.data["message_id"])
        assert (in_case.case_id, in_case.archived) == (case["id"], True)
        fields = session.scalar(select(Contact.fields).where(Contact.uuid == contact))
        assert fields == {"age": "16"}


def message_contact(world, message_id: str) -> str:
    with world.store.db.session() as session:
        message = session.get(Message, message_id)
        return session.get(Contact, message.contact_id).uuid


def test_a_message_received_is_held_for_its_labels_only():
    """The worker's subscription holds back a message.received whose message.labeled is not
    in hand yet (shared/bus/consumer.py), and nothing else: not one whose labels are there, not
    another event, not a body that is not an event (the batch dead-letters that)."""
    from services.cases.handlers.consumers import awaiting_labels

    first, second = message_received(), message_received()
    bodies = [json.loads(e.body()) for e in (first, second, message_labeled(second, []))]
    assert awaiting_labels(bodies) == {0}
    assert awaiting_labels(bodies[1:]) == set()
    assert awaiting_labels([bodies[2]]) == set()
    odd = [None, "x", [1], {"name": "message.received"}, {"name": "message.received", "data": 3}]
    assert awaiting_labels(odd) == set()
    assert awaiting_labels([*odd, bodies[0]]) == {len(odd)}

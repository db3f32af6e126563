"""Routing keys: a message.labeled reaches flowbridge's mirror queue only when flowbridge may
mirror it (a label synced with the flow engine); cases gets every one. The embedded bus routes
with the same table as RabbitMQ's bindings (tests/integration/test_relay_rabbitmq.py)."""

from __future__ import annotations

import pytest

from shared import events as ev
from shared.bus import topology
from shared.bus.embedded import EmbeddedBus
from shared.bus.topology import CASES_MESSAGES, FLOWBRIDGE_MIRROR, routes, routing_key
from shared.relay import Relay
from tests.support import probe_store

LABEL = "3f1e2d4c-0000-4000-8000-00000000000a"
MESSAGE = "8a0c6a7e-0000-4000-8000-000000000001"
CONTACT = "5d2f1a4e-0000-4000-8000-000000000002"


def labeled(
    synced=(LABEL,), *, simulation=False, external_id="9e8d7c6b-0000-4000-8000-0000000000ff"
):
    data = {
        "message_id": MESSAGE,
        "contact_uuid": CONTACT,
        "labels": [LABEL],
        "synced": list(synced),
        "external_id": external_id,
        "simulation": simulation,
    }
    return ev.new_event(ev.MESSAGE_LABELED, org="demo", producer="labeler", data=data)


@pytest.mark.parametrize(
    ("event", "mirror"),
    [
        (labeled(), True),
        (labeled(synced=()), False),
        (labeled(simulation=True), False),
        (labeled(external_id=None), False),
    ],
)
def test_a_labelled_message_reaches_the_mirror_only_if_it_may_be_mirrored(event, mirror):
    key = routing_key(event.name, event.data)
    reached = routes(key)
    assert CASES_MESSAGES in reached
    assert (FLOWBRIDGE_MIRROR in reached) is mirror
    assert (key == topology.MESSAGE_LABELED_SYNCED) is mirror


def test_other_events_go_out_under_their_name():
    for name in (ev.MESSAGE_RECEIVED, ev.MESSAGE_ARCHIVED, ev.CASE_OPENED, ev.LABEL_CREATED):
        assert routing_key(name, {"synced": [LABEL], "external_id": "x"}) == name


@pytest.mark.parametrize("data", [None, [], "text", {}])
def test_a_labelled_event_without_its_data_goes_out_under_its_name(data):
    """The relay publishes whatever its outbox holds; a consumer dead-letters what is broken."""
    assert routing_key(ev.MESSAGE_LABELED, data) == ev.MESSAGE_LABELED


def test_every_event_a_queue_handles_reaches_it_under_some_key():
    """No queue lists an event that no routing key brings it (a binding forgotten)."""
    keys = {name for spec in topology.QUEUES for name in spec.events}
    keys.add(topology.MESSAGE_LABELED_SYNCED)
    for spec in topology.QUEUES:
        for name in spec.events:
            assert any(key in spec.bindings for key in keys if key.startswith(name)), (spec, name)


def test_a_relay_on_the_embedded_bus_routes_by_the_key(settings):
    bus = EmbeddedBus(settings)  # every queue of the topology
    store = probe_store(settings)
    with store.unit_of_work() as uow:
        for event in (labeled(), labeled(synced=()), labeled(simulation=True)):
            uow.add_event(event)
        uow.commit()
    assert Relay(store, bus).relay_once() == 3
    assert bus.depth(CASES_MESSAGES.name(settings.namespace)) == 3
    assert bus.depth(FLOWBRIDGE_MIRROR.name(settings.namespace)) == 1
    store.db.dispose()

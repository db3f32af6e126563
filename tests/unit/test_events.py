import json

import pytest
from marshmallow import ValidationError

from shared.events import MESSAGE_RECEIVED, BadEvent, new_event, read_event
from tests.support import message_received


def test_envelope_round_trip_keeps_every_field():
    event = message_received("socorro", simulation=True)
    read = read_event(event.body())
    assert read.id == event.id and read.name == MESSAGE_RECEIVED
    assert read.org == "demo" and read.producer == "test" and read.version == 1
    assert read.correlation_id == event.id  # a new chain starts with its first event
    assert read.data["text"] == "socorro" and read.data["simulation"] is True
    assert read.data["received_at"].tzinfo is not None


def test_writers_are_strict():
    with pytest.raises(ValidationError) as err:
        new_event(
            MESSAGE_RECEIVED, org="demo", producer="t", data={"message_id": "x", "urn": "tel:+1"}
        )
    assert "urn" in err.value.messages  # an unknown field (and a URN at that) is refused
    assert "contact_uuid" in err.value.messages


def test_readers_ignore_unknown_keys():
    body = message_received().to_json()
    body["data"]["added_later"] = 1
    body["something_new"] = True
    assert "added_later" not in read_event(json.dumps(body)).data


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.pop("id"),
        lambda b: b.update(name="no.such_event"),
        lambda b: b["data"].pop("contact_uuid"),
        lambda b: b.update(version=99),
        lambda b: b.update(occurred_at="yesterday"),
    ],
)
def test_bad_events_are_refused(mutate):
    body = message_received().to_json()
    mutate(body)
    with pytest.raises(BadEvent):
        read_event(json.dumps(body))


def test_not_json_is_a_bad_event():
    with pytest.raises(BadEvent):
        read_event(b"\xff not json")

"""``shared.quickload.quick_load`` gives what marshmallow's ``load`` gives, or leaves it to
marshmallow: on every event schema (and the envelope's), with valid data and with each field
missing, null or of another type."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from shared import events
from shared.quickload import quick_dump, quick_load

ODD = [None, 42, 4.5, True, "", "x", "2026-12-07T10:00:00", "not a date", [], ["a"], {}, {"a": 1}]


def sample(field: fields.Field) -> Any:
    """A value the field loads."""
    kind = type(field)
    if kind is fields.AwareDateTime:
        return datetime(2026, 12, 7, 10, 0, 0, 123456, tzinfo=UTC).isoformat()
    if kind is fields.Integer:
        return 3
    if kind is fields.Boolean:
        return True
    if kind is fields.List:
        return [sample(field.inner), sample(field.inner)]
    if kind is fields.Dict:
        return {"age": "15", "none": None} if field.value_field else {"type": "keywords"}
    if kind is fields.Nested:
        return document(field.schema)
    for validator in field.validators:
        if isinstance(validator, validate.OneOf):
            return validator.choices[0]
    return "8a0c6a7e-0000-4000-8000-000000000001"


def document(schema: Schema) -> dict[str, Any]:
    return {field.data_key or name: sample(field) for name, field in schema.load_fields.items()}


def variants(data: dict[str, Any]):
    yield "as written", data
    yield "with an unknown key", {**data, "added_later": 1}
    for key in data:
        changed = copy.deepcopy(data)
        del changed[key]
        yield f"{key} missing", changed
        for value in ODD:
            yield f"{key} = {value!r}", {**copy.deepcopy(data), key: value}
        if isinstance(data[key], dict):
            for inner in data[key]:
                nested = copy.deepcopy(data)
                nested[key][inner] = 42
                yield f"{key}.{inner} = 42", nested
            yield f"{key} with an unknown key", {**data, key: {**data[key], "extra": 1}}


def outcome(load):
    try:
        return "loaded", load()
    except ValidationError as exc:
        return "refused", exc.messages


@pytest.mark.parametrize("name", sorted(events.SCHEMAS))
@pytest.mark.parametrize("unknown", [EXCLUDE, RAISE])
def test_quick_load_agrees_with_marshmallow(name, unknown):
    schema = events.SCHEMAS[name](unknown=unknown)
    quick_ones = 0
    for what, data in variants(document(schema)):
        expected = outcome(lambda data=data: schema.load(copy.deepcopy(data)))
        quick = quick_load(schema, copy.deepcopy(data))
        if quick is not None:
            quick_ones += 1
            assert ("loaded", quick) == expected, what
    assert quick_ones >= 1  # the data as written takes the quick road


@pytest.mark.parametrize("name", sorted(events.SCHEMAS))
def test_a_writers_load_and_dump_agree_with_marshmallow(name):
    """What ``new_event`` keeps of its data: loaded strictly, then dumped."""
    schema = events.SCHEMAS[name](unknown=RAISE)
    quick_ones = 0
    for what, data in variants(document(schema)):
        expected = outcome(lambda data=data: schema.dump(schema.load(copy.deepcopy(data))))
        loaded = quick_load(schema, copy.deepcopy(data))
        quick = quick_dump(schema, loaded) if loaded is not None else None
        if quick is not None:
            quick_ones += 1
            assert ("loaded", quick) == expected, what
    assert quick_ones >= 1


def test_the_envelope_agrees_with_marshmallow():
    schema = events._envelope_schema()
    body = events.new_event(
        events.MESSAGE_LABELED,
        org="demo",
        producer="labeler",
        data={"message_id": "m", "contact_uuid": "c", "labels": ["l"]},
    ).to_json()
    for what, data in variants(body):
        quick = quick_load(schema, copy.deepcopy(data))
        if quick is not None:
            assert ("loaded", quick) == outcome(lambda data=data: schema.load(data)), what
    assert quick_load(schema, body) is not None

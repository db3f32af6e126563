"""Unit tests of the pure webhook parsing (services.ingest.domain and .schemas)."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from services.ingest.domain import (
    Attachment,
    Channel,
    Group,
    InboundMessage,
    InvalidWebhook,
    detect_shape,
    parse_webhook,
)
from services.ingest.schemas import parse_timestamp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
FORM = "application/x-www-form-urlencoded"
JSON_FIXTURES = {
    "editor_default.json": "editor",
    "resthook.json": "resthook",
    "resthook_legacy_path.json": "resthook",
    "upartners_template.json": "upartners",
}
ALL_FIXTURES = [*JSON_FIXTURES, "legacy_form.txt"]

# What the fixtures describe: one contact message on a helpline flow.
CONTACT_UUID = "0f025fea-98bb-46bf-a0fe-005db39635cf"
FLOW_UUID = "7014582e-489a-4049-a03a-d443fa07c6ff"
RUN_UUID = "5cedbdd1-c8ce-471f-852e-fb9f7f08126e"
INPUT_UUID = "c6cafbdf-65a1-4b6a-8942-51ccf68fc52c"
CHANNEL_UUID = "e9d012bb-027b-45f2-b052-ba81429cae9a"
WAIT_NODE = "656d2a12-dbfc-4441-9bbe-6eb732aa0e92"
WEBHOOK_NODE = "8d9c4bd3-6593-4460-8a15-74230fb4b368"
TEXT = (
    "Oi, tô sofrendo bullying na escola faz umas semanas e não sei com quem falar. "
    "Hoje mandaram essa foto minha no grupo da turma."
)
ATTACHMENTS = (
    Attachment(
        "image/jpeg",
        "https://uploads.helpline-flows.example/attachments/2024/09/12/5b0d2c1e/foto.jpg",
    ),
    Attachment(
        "audio/ogg",
        "https://uploads.helpline-flows.example/attachments/2024/09/12/91f7a0c4/audio.oga",
    ),
)
SENT_ON = datetime(2024, 9, 12, 18, 44, 27, 601233, tzinfo=UTC)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_content_type(name: str) -> str | None:
    return FORM if name.endswith(".txt") else None  # the classic editor sends no content type


def parse_fixture(name: str) -> InboundMessage:
    return parse_webhook(fixture_bytes(name), fixture_content_type(name))


# --- factories ------------------------------------------------------------------------------
OMIT = object()


def make_contact(**overrides: Any) -> dict[str, Any]:
    contact = {"uuid": "b6a3e6f5-3d1c-4a8e-9b57-0f3e4c2d1a90", "name": "Ana", "urn": "tel:+5511"}
    return _apply(contact, overrides)


def make_flow(**overrides: Any) -> dict[str, Any]:
    return _apply({"uuid": "3f1d2c4b-5a6e-4f70-8a9b-c0d1e2f3a4b5", "name": "Helpline"}, overrides)


def make_result(**fields: Any) -> dict[str, Any]:
    return dict(fields)


def make_path_entry(node_uuid: Any = OMIT, **extra: Any) -> dict[str, Any]:
    return _apply({"arrived_on": "2024-09-12T18:00:00.000000Z"}, {"node_uuid": node_uuid, **extra})


def make_input(**overrides: Any) -> dict[str, Any]:
    message = {
        "uuid": "2c9d7f1e-8b6a-4c5d-9e0f-1a2b3c4d5e6f",
        "type": "msg",
        "text": "preciso de ajuda",
        "attachments": [],
        "created_on": "2024-09-12T18:00:00.000000Z",
    }
    return _apply(message, overrides)


def make_body(**parts: Any) -> dict[str, Any]:
    """An editor-shaped body; any part given is added (or removed with ``OMIT``)."""
    return _apply({"contact": make_contact(), "flow": make_flow()}, parts)


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overrides.items():
        if value is OMIT:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def encode(document: Any) -> bytes:
    """JSON with non-ASCII escaped, so lone surrogates become ``\\udxxx`` escapes as on the wire."""
    return json.dumps(document).encode("ascii")


def parse_doc(document: Any, content_type: str | None = "application/json") -> InboundMessage:
    return parse_webhook(encode(document), content_type)


def make_form(**fields: Any) -> bytes:
    """A legacy form body; list values of ``values``/``steps`` are JSON-encoded, other lists
    repeat the field."""
    pairs: list[tuple[str, str]] = [
        ("contact", "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4"),
        ("flow_uuid", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"),
    ]
    pairs = [(k, v) for k, v in pairs if k not in fields]
    for key, value in fields.items():
        if value is OMIT:
            continue
        if key in ("values", "steps") and not isinstance(value, str):
            pairs.append((key, json.dumps(value)))
        elif isinstance(value, list):
            pairs.extend((key, item) for item in value)
        else:
            pairs.append((key, value))
    return urlencode(pairs).encode("ascii")


def invalid_fields(raw: bytes, content_type: str | None = "application/json") -> dict:
    with pytest.raises(InvalidWebhook) as caught:
        parse_webhook(raw, content_type)
    return caught.value.fields


# --- the fixtures -----------------------------------------------------------------------------
COMMON = {
    "contact_uuid": CONTACT_UUID,
    "contact_name": "Júlia Ferreira",
    "urn": "whatsapp:5511987654321",
    "flow_uuid": FLOW_UUID,
    "flow_name": "Helpline - Pedir ajuda",
    "text": TEXT,
}
ENGINE_BUILT = {
    "node_uuid": WEBHOOK_NODE,
    "run_uuid": RUN_UUID,
    "input_uuid": INPUT_UUID,
    "attachments": ATTACHMENTS,
    "channel": Channel(CHANNEL_UUID, "WhatsApp Ajuda"),
    "sent_on": SENT_ON,
}
EXPECTED = {
    "editor_default.json": {
        **COMMON,
        "shape": "editor",
        "language": None,
        "node_uuid": None,
        "run_uuid": None,
        "input_uuid": None,
        "attachments": (),
        "channel": None,
        "sent_on": None,
        "groups": (),
        "fields": {},
    },
    "resthook.json": {
        **COMMON,
        **ENGINE_BUILT,
        "shape": "resthook",
        "language": "por",
        "groups": (),
        "fields": {},
    },
    "resthook_legacy_path.json": {
        **COMMON,
        **ENGINE_BUILT,
        "shape": "resthook",
        "language": None,
        "groups": (),
        "fields": {},
    },
    "upartners_template.json": {
        **COMMON,
        **ENGINE_BUILT,
        "shape": "upartners",
        "language": "por",
        "groups": (
            Group("a2a85efd-2bd6-49e2-9355-c40d2f5c914a", "Adolescentes 13-17"),
            Group("75308f26-a209-4726-b621-91983dd2268d", "Helpline Users"),
            Group("83d10dd6-3f69-4bb7-a45c-3030230d7e25", "São Paulo"),
        ),
        "fields": {
            "age": "15",
            "city": "Guarulhos",
            "gender": "feminino",
            "registration_date": "2024-03-02T14:20:11.000000-03:00",
            "school_type": None,
            "state": "SP",
        },
    },
    "legacy_form.txt": {
        **COMMON,
        "shape": "legacy_form",
        "language": None,
        "node_uuid": WEBHOOK_NODE,
        "run_uuid": None,  # the legacy run is an integer id
        "input_uuid": None,
        "attachments": ATTACHMENTS,
        "channel": Channel(CHANNEL_UUID, None),
        "sent_on": datetime(2024, 9, 12, 18, 44, 28, 57211, tzinfo=UTC),  # the webhook's time
        "groups": (),
        "fields": {},
    },
}


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixture_parses_to_the_expected_message(name):
    message = parse_fixture(name)
    actual = {field: getattr(message, field) for field in EXPECTED[name]}
    actual["fields"] = dict(message.fields)
    assert actual == EXPECTED[name]
    assert {f.name for f in dataclasses.fields(InboundMessage)} == set(EXPECTED[name])


def test_every_fixture_describes_the_same_message():
    messages = {name: parse_fixture(name) for name in ALL_FIXTURES}

    def values(field: str, names: list[str]) -> set[Any]:
        return {getattr(messages[name], field) for name in names}

    for field in COMMON:
        assert values(field, ALL_FIXTURES) == {COMMON[field]}, field
    carriers = [name for name in ALL_FIXTURES if name != "editor_default.json"]
    assert values("node_uuid", carriers) == {WEBHOOK_NODE}
    assert values("attachments", carriers) == {ATTACHMENTS}
    assert {messages[name].channel.uuid for name in carriers} == {CHANNEL_UUID}
    engine_json = ["resthook.json", "resthook_legacy_path.json", "upartners_template.json"]
    for field in ("run_uuid", "input_uuid", "sent_on", "channel"):
        assert values(field, engine_json) == {ENGINE_BUILT[field]}, field


def test_engine_built_fixtures_share_one_idempotency_key():
    names = ["resthook.json", "resthook_legacy_path.json", "upartners_template.json"]
    keys = {parse_fixture(name).idempotency_key(fixture_bytes(name)) for name in names}
    assert len(keys) == 1


def test_a_message_is_immutable_and_hashable():
    message = parse_fixture("upartners_template.json")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        message.fields["age"] = "16"  # type: ignore[index]
    assert hash(message) == hash(parse_fixture("upartners_template.json"))
    assert message == parse_fixture("upartners_template.json")


def test_the_channel_address_is_never_kept():
    message = parse_fixture("resthook.json")
    assert "+5511940028922" not in repr(message)
    assert {f.name for f in dataclasses.fields(Channel)} == {"uuid", "name"}


# --- shape detection --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("parts", "shape"),
    [
        ({}, "editor"),
        ({"results": {}}, "editor"),
        ({"input": None}, "resthook"),
        ({"run": {"uuid": "r"}}, "resthook"),
        ({"path": []}, "resthook"),
        ({"node": {"uuid": "n"}, "input": None}, "upartners"),
        ({"node": None}, "upartners"),
        ({"contact": make_contact(groups=[])}, "upartners"),
        ({"contact": make_contact(fields={}), "run": {}}, "upartners"),
    ],
)
def test_shape_detection(parts, shape):
    body = make_body(**parts)
    assert detect_shape(body) == shape
    assert parse_doc(body).shape == shape


# --- step precedence --------------------------------------------------------------------------
def test_step_is_node_uuid_first():
    body = make_body(
        node={"uuid": "node-explicit"},
        path=[make_path_entry("node-path")],
        results={"a": make_result(value="x", node_uuid="node-result")},
    )
    assert parse_doc(body).node_uuid == "node-explicit"


def test_step_is_the_last_path_entry_without_node():
    body = make_body(
        path=[make_path_entry("node-first"), make_path_entry("node-last")],
        results={"a": make_result(value="x", node_uuid="node-result")},
    )
    assert parse_doc(body).node_uuid == "node-last"


def test_step_falls_back_to_an_older_path_entrys_uuid():
    body = make_body(path=[make_path_entry("node-first"), make_path_entry(OMIT, uuid="step-uuid")])
    assert parse_doc(body).node_uuid == "step-uuid"


def test_step_is_the_newest_results_node_without_path():
    body = make_body(
        node={"uuid": "  "},
        path=[],
        results={
            "late": make_result(
                value="b", node_uuid="node-late", created_on="2024-01-01T10:05:00Z"
            ),
            "early": make_result(
                value="a", node_uuid="node-early", created_on="2024-01-01T10:00:00Z"
            ),
        },
    )
    assert parse_doc(body).node_uuid == "node-late"


def test_step_uses_the_last_result_in_document_order_when_none_is_dated():
    body = make_body(
        results={
            "b": make_result(value="b", node_uuid="node-b"),
            "a": make_result(value="a", node_uuid="node-a"),
        }
    )
    assert parse_doc(body).node_uuid == "node-a"


def test_step_skips_an_unusable_last_path_entry():
    body = make_body(
        path=[make_path_entry("node-first"), 42],
        results={"a": make_result(value="x", node_uuid="node-result")},
    )
    assert parse_doc(body).node_uuid == "node-result"


def test_step_is_none_when_nothing_names_it():
    assert parse_doc(make_body(results={"a": make_result(value="x")})).node_uuid is None


def test_legacy_step_comes_first_then_steps_then_values():
    values = [{"node": "node-value", "text": "t", "time": "2024-01-01T10:00:00Z"}]
    steps = [{"node": "node-step-1"}, {"node": "node-step-2"}]
    both = {"values": values, "steps": steps}
    assert parse_webhook(make_form(step="node-legacy", **both), FORM).node_uuid == "node-legacy"
    assert parse_webhook(make_form(step="", **both), FORM).node_uuid == "node-step-2"
    assert parse_webhook(make_form(values=values), FORM).node_uuid == "node-value"
    assert parse_webhook(make_form(), FORM).node_uuid is None


# --- text precedence --------------------------------------------------------------------------
def newest_and_older(**newest: Any) -> dict[str, Any]:
    return {
        "older": make_result(input="older input", value="older", created_on="2024-01-01T09:00:00Z"),
        "newest": make_result(created_on="2024-01-01T10:00:00Z", **newest),
    }


def test_text_is_input_text_first():
    body = make_body(input=make_input(text="da mensagem"), results=newest_and_older(input="r"))
    assert parse_doc(body).text == "da mensagem"


@pytest.mark.parametrize("message", [OMIT, None, {"uuid": "i"}, make_input(text=""), "junk"])
def test_text_is_the_newest_results_input_without_input_text(message):
    body = make_body(input=message, results=newest_and_older(input="bruto", value="Valor"))
    assert parse_doc(body).text == "bruto"


def test_text_is_the_newest_results_value_without_its_input():
    body = make_body(results=newest_and_older(input="   ", value="só o valor"))
    assert parse_doc(body).text == "só o valor"


def test_text_uses_the_last_result_in_document_order_when_none_is_dated():
    body = make_body(results={"first": make_result(value="um"), "second": "dois"})
    assert parse_doc(body).text == "dois"


# The editor's default body: results keyed by name, value and category only, alphabetical.
EDITOR_RESULTS = {
    "message": {"name": "Message", "value": "preciso de ajuda", "category": "Has Text"},
    "topic": {"name": "Topic", "value": "2", "category": "2"},
}


@pytest.mark.parametrize(
    "wanted, text",
    [
        (None, "preciso de ajuda"),  # the result named message, not the last one ("2")
        ("topic", "2"),  # the URL names another result, by its key
        ("TOPIC", "2"),  # in any case
        ("Message", "preciso de ajuda"),  # or by its name
        ("absent", "preciso de ajuda"),  # a name that is not there: as if none were given
        ("  ", "preciso de ajuda"),
    ],
)
def test_the_message_result_is_the_one_the_url_names_else_message(wanted, text):
    body = encode(make_body(results=EDITOR_RESULTS))
    assert parse_webhook(body, "application/json", wanted).text == text


def test_without_a_message_result_the_only_one_else_the_newest():
    only = make_body(results={"answer": {"value": "sozinho"}})
    assert parse_doc(only).text == "sozinho"
    body = make_body(results={"first": make_result(value="um"), "second": "dois"})
    assert parse_webhook(encode(body), "application/json", "first").text == "um"
    assert parse_doc(body).text == "dois"  # none named message: the newest, as before


def test_input_text_still_wins_over_any_result():
    body = make_body(input=make_input(text="da mensagem"), results=EDITOR_RESULTS)
    assert parse_webhook(encode(body), "application/json", "topic").text == "da mensagem"


def test_text_is_the_legacy_text_then_the_newest_value():
    values = [
        {"text": "antiga", "value": "antiga", "time": "2024-01-01T09:00:00Z"},
        {"text": "", "value": "nova", "time": "2024-01-01T10:00:00Z"},
    ]
    assert parse_webhook(make_form(text="direto", values=values), FORM).text == "direto"
    assert parse_webhook(make_form(text="", values=values), FORM).text == "nova"


@pytest.mark.parametrize("blank", ["", "   ", "\n"])
def test_blank_text_everywhere_is_none(blank):
    body = make_body(input=make_input(text=blank), results={"a": make_result(value=blank)})
    assert parse_doc(body).text is None
    assert parse_webhook(make_form(text=blank), FORM).text is None


# --- other fields -----------------------------------------------------------------------------
def test_sent_on_is_input_created_on_then_the_newest_result():
    dated = make_body(input=make_input(created_on="2024-09-12T15:44:27.601233-03:00"))
    assert parse_doc(dated).sent_on == SENT_ON
    undated = make_body(
        input=make_input(created_on="yesterday"),
        results=newest_and_older(value="x"),
    )
    assert parse_doc(undated).sent_on == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert parse_doc(make_body(results={"a": make_result(value="x")})).sent_on is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-09-12T18:44:27.601233Z", SENT_ON),
        ("2024-09-12T18:44:27.601233999Z", SENT_ON),
        ("2024-09-12t15:44:27.601233-03:00", SENT_ON),
        ("2024-09-12T18:44:27Z", datetime(2024, 9, 12, 18, 44, 27, tzinfo=UTC)),
        ("2024-09-12T18:44:27.5Z", datetime(2024, 9, 12, 18, 44, 27, 500000, tzinfo=UTC)),
        ("2024-09-12T18:44:27.601233", None),
        ("2024-02-30T00:00:00Z", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("12/09/2024", None),
        (1726166667, None),
        (None, None),
    ],
)
def test_parse_timestamp(text, expected):
    assert parse_timestamp(text) == expected


def test_the_engine_form_quick_road_parses_exactly_as_the_pattern():
    """Timestamps in the engine's own form go through ``datetime.fromisoformat``; on that form
    and on every variant of it with one character replaced, it gives what the pattern gives."""
    import random

    from services.ingest import schemas

    def by_pattern(value):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(schemas, "_is_engine_form", lambda _value: False)
            return parse_timestamp(value)

    engine_form = "2024-09-12T18:44:27.601233Z"
    replacements = "0123456789-:.TtZz +W_\u0663\uff11"  # an Arabic-Indic and a full-width digit
    variants = {engine_form, "2024-02-30T00:00:00.000000Z", "2024-W37-4T18:44:27.601233Z"}
    variants |= {
        engine_form[:i] + c + engine_form[i + 1 :]
        for i in range(len(engine_form))
        for c in replacements
    }
    rng = random.Random(7)
    variants |= {
        "".join(rng.choice("0123456789") if ch.isdigit() else ch for ch in engine_form)
        for _ in range(500)
    }
    quick = [v for v in variants if schemas._is_engine_form(v)]
    assert len(quick) > 500  # the road is taken
    for value in sorted(variants):
        assert parse_timestamp(value) == by_pattern(value), value


def test_groups_and_fields_come_from_the_template_only():
    contact = make_contact(
        groups=[
            {"uuid": "g-1", "name": "Helpline"},
            {"uuid": "g-1", "name": "duplicate"},
            {"name": "no uuid"},
            "g-2",
            {"uuid": "g-3"},
        ],
        fields={"age": 15, "score": 2.5, "opt_in": True, "none": None, "nested": {"a": 1}},
    )
    message = parse_doc(make_body(contact=contact))
    assert message.groups == (Group("g-1", "Helpline"), Group("g-3", None))
    assert dict(message.fields) == {"age": "15", "score": "2.5", "opt_in": "true", "none": None}
    resthook = parse_doc(make_body(run={"uuid": "r"}))
    assert (resthook.groups, dict(resthook.fields)) == ((), {})


def test_attachments_accept_objects_and_engine_strings():
    message = make_input(
        attachments=[
            {"content_type": "image/png", "url": "https://x.example/a.png"},
            {"url": "https://x.example/b"},
            "video/mp4:https://x.example/c.mp4",
            "geo:-23.55,-46.63",
            "https://x.example/d.pdf",
            {"content_type": "image/png"},
            7,
        ]
    )
    assert parse_doc(make_body(input=message)).attachments == (
        Attachment("image/png", "https://x.example/a.png"),
        Attachment(None, "https://x.example/b"),
        Attachment("video/mp4", "https://x.example/c.mp4"),
        Attachment("geo", "-23.55,-46.63"),
        Attachment(None, "https://x.example/d.pdf"),
    )


def test_channel_prefers_the_inputs_then_the_bodys():
    top = {"uuid": "ch-top", "name": "Top", "address": "+1555"}
    with_input = make_body(input=make_input(channel={"uuid": "ch-in", "name": "In"}), channel=top)
    assert parse_doc(with_input).channel == Channel("ch-in", "In")
    assert parse_doc(make_body(input=None, channel=top)).channel == Channel("ch-top", "Top")
    assert parse_doc(make_body(input=None, channel={"address": "+1"})).channel is None


def test_urn_is_kept_as_sent_and_falls_back_to_the_inputs():
    display = make_body(contact=make_contact(urn="telegram:123#nick"))
    assert parse_doc(display).urn == "telegram:123#nick"
    urn_object = {"scheme": "whatsapp", "path": "5511", "display": "x"}
    no_urn = make_body(contact=make_contact(urn=OMIT), input=make_input(urn=urn_object))
    assert parse_doc(no_urn).urn == "whatsapp:5511"


def test_identifiers_are_stripped_and_unknown_keys_ignored():
    body = make_body(
        contact=make_contact(uuid="  c-1 ", unexpected={"deep": [1]}),
        run={"uuid": "r" * 65},
        surprise=[1, 2, 3],
    )
    message = parse_doc(body)
    assert (message.contact_uuid, message.run_uuid) == ("c-1", None)


# --- content types ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/json",
        "application/json; charset=utf-8",
        "Text/Plain; Charset=UTF-8",
        "application/octet-stream",
        "application/xml",
    ],
)
def test_anything_but_a_form_is_parsed_as_json(content_type):
    raw = fixture_bytes("resthook.json")
    assert parse_webhook(raw, content_type).text == TEXT


@pytest.mark.parametrize(
    "content_type",
    [FORM, f"{FORM}; charset=utf-8", "Application/X-WWW-Form-Urlencoded;charset=UTF-8"],
)
def test_the_form_content_type_is_the_legacy_form(content_type):
    message = parse_webhook(fixture_bytes("legacy_form.txt"), content_type)
    assert (message.shape, message.text) == ("legacy_form", TEXT)


def test_a_form_in_latin_1_is_decoded_with_its_charset():
    raw = b"contact=c-1&flow_uuid=f-1&contact_name=J%FAlia&text=n%E3o"
    message = parse_webhook(raw, f"{FORM}; charset=ISO-8859-1")
    assert (message.contact_name, message.text) == ("Júlia", "não")


def test_a_json_object_sent_with_the_form_content_type_is_parsed_as_json():
    # curl --data sends the form type by default; a form body never starts with "{".
    message = parse_webhook(fixture_bytes("resthook.json"), FORM)
    assert message.shape == "resthook"


def test_a_form_body_that_is_not_json_stays_a_form():
    fields = invalid_fields(b"text=oi&flow_uuid=", FORM)
    assert "contact" in fields


# --- errors -----------------------------------------------------------------------------------
REQUIRED = "Missing data for required field."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xff\xfe{}", {"_body"}),
        (b'{"contact": ', {"_body"}),
        (b"", {"_body"}),
        (b"[]", {"_body"}),
        (b'"text"', {"_body"}),
        (b"null", {"_body"}),
        (b'{"contact": {"uuid": NaN}}', {"_body"}),
        (b"[" * 100_000, {"_body"}),
    ],
)
def test_unreadable_bodies(raw, expected):
    assert set(invalid_fields(raw)) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (make_body(contact=OMIT), {"contact.uuid": [REQUIRED]}),
        (make_body(contact=make_contact(uuid=OMIT)), {"contact.uuid": [REQUIRED]}),
        (make_body(contact=make_contact(uuid=" ")), {"contact.uuid": ["Must not be blank."]}),
        (make_body(contact=make_contact(uuid=42)), {"contact.uuid": ["Not a valid string."]}),
        (make_body(contact=make_contact(uuid=None)), {"contact.uuid": ["Field may not be null."]}),
        (
            make_body(contact=make_contact(uuid="c" * 65)),
            {"contact.uuid": ["Longer than maximum length 64."]},
        ),
        (make_body(contact="c-1"), {"contact": ["Invalid input type."]}),
        (make_body(flow=OMIT), {"flow.uuid": [REQUIRED]}),
        (make_body(flow=make_flow(uuid="")), {"flow.uuid": ["Must not be blank."]}),
        (make_body(flow=make_flow(uuid=[])), {"flow.uuid": ["Not a valid string."]}),
        ({}, {"contact.uuid": [REQUIRED], "flow.uuid": [REQUIRED]}),
    ],
)
def test_missing_or_invalid_identifiers(body, expected):
    assert invalid_fields(encode(body)) == expected


FORBIDDEN = ["Must not contain NUL characters or unpaired surrogates."]
FORBIDDEN_KEY = ["Must not contain a key with NUL characters or unpaired surrogates."]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            encode(make_body(results={"message": make_result(input="a\u0000b")})),
            {"results.message.input": FORBIDDEN},
        ),
        (encode(make_body(contact=make_contact(name="x\ud800"))), {"contact.name": FORBIDDEN}),
        (
            encode(make_body(path=[make_path_entry("n"), {"x\u0000": 1}])),
            {"path.1": FORBIDDEN_KEY},
        ),
        (
            b'{"\\udfff": 1, "contact": {"uuid": "c"}, "flow": {"uuid": "f"}}',
            {"_body": FORBIDDEN_KEY},
        ),
        (encode(make_body(unused=["ok", "\u0000"])), {"unused.1": FORBIDDEN}),
    ],
)
def test_nul_and_lone_surrogates_are_refused_anywhere(raw, expected):
    assert invalid_fields(raw) == expected


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        (make_form(contact=OMIT), {"contact"}),
        (make_form(contact="  "), {"contact"}),
        (make_form(flow_uuid=OMIT), {"flow_uuid"}),
        (make_form(contact=OMIT, flow_uuid=OMIT), {"contact", "flow_uuid"}),
        (make_form(values="[{"), {"values"}),
        (make_form(steps="not json"), {"steps"}),
        (make_form(steps="[" * 100_000), {"steps"}),
        (make_form(values='{"node": "n"}'), {"values"}),
        (make_form(values=[{"text": "a\u0000"}]), {"values.0.text"}),
        (make_form(text="a\u0000b"), {"text"}),
        (make_form() + b"&x%00y=1", {"_body"}),
        (make_form() + b"&text=%FF", {"_body"}),
        (b"\xffcontact=c", {"_body"}),
    ],
)
def test_legacy_form_errors(form, expected):
    assert set(invalid_fields(form, FORM)) == expected


def test_an_unsupported_form_charset_is_refused():
    assert set(invalid_fields(make_form(), f"{FORM}; charset=base64")) == {"_body"}


def test_error_field_names_never_carry_the_bad_text():
    raw = encode(make_body(results={"a\u0000key": make_result(value="x")}))
    with pytest.raises(InvalidWebhook) as caught:
        parse_webhook(raw, None)
    assert caught.value.fields == {"results": FORBIDDEN_KEY}
    assert "\u0000" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


# --- robustness -------------------------------------------------------------------------------
WRONG_TYPES = [None, 0, -1.5, True, "", "x", [], {}, [None, 7], {"uuid": 1, "text": []}]
OPTIONAL_PARTS = [
    ("path",),
    ("path", 0),
    ("run",),
    ("input",),
    ("input", "text"),
    ("input", "attachments"),
    ("input", "attachments", 0),
    ("input", "channel"),
    ("input", "created_on"),
    ("input", "urn"),
    ("channel",),
    ("node",),
    ("node", "uuid"),
    ("results",),
    ("results", "message"),
    ("results", "message", "created_on"),
    ("contact", "name"),
    ("contact", "urn"),
    ("contact", "language"),
    ("contact", "groups"),
    ("contact", "groups", 0),
    ("contact", "fields"),
    ("contact", "fields", "age"),
    ("flow", "name"),
]


def every_part_body() -> dict[str, Any]:
    """The template fixture plus the resthook's ``path`` and ``channel``: every optional part."""
    document = json.loads(fixture_bytes("upartners_template.json"))
    resthook = json.loads(fixture_bytes("resthook.json"))
    return {**document, "path": resthook["path"], "channel": resthook["channel"]}


@pytest.mark.parametrize("where", OPTIONAL_PARTS, ids=lambda where: ".".join(map(str, where)))
@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_wrong_types_in_optional_parts_do_not_stop_the_message(where, value):
    document = every_part_body()
    *parents, last = where
    target = document
    for key in parents:
        target = target[key]
    target[last] = value
    message = parse_doc(document)
    assert (message.contact_uuid, message.flow_uuid) == (CONTACT_UUID, FLOW_UUID)


def parse_or_refuse(raw: bytes, content_type: str | None) -> None:
    try:
        message = parse_webhook(raw, content_type)
    except InvalidWebhook as exc:
        assert exc.fields and all(isinstance(m, list) and m for m in exc.fields.values())
    else:
        assert isinstance(message, InboundMessage)
        assert message.contact_uuid.strip() and message.flow_uuid.strip()


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_prefix_of_a_fixture_parses_or_is_refused(name):
    raw = fixture_bytes(name)
    for end in range(len(raw) + 1):
        parse_or_refuse(raw[:end], fixture_content_type(name))


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_garbled_fixtures_parse_or_are_refused(name):
    rng = random.Random(f"garble:{name}")
    raw = fixture_bytes(name)
    for _ in range(400):
        garbled = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(garbled))
            choice = rng.random()
            if choice < 0.4:
                garbled[position] = rng.randrange(256)
            elif choice < 0.7:
                del garbled[position]
            else:
                garbled.insert(position, rng.choice(b'{}[]",:\\0\x00%&=+'))
        parse_or_refuse(bytes(garbled), fixture_content_type(name))


def _subtree_paths(node: Any, path: tuple = ()) -> list[tuple]:
    paths = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            paths += _subtree_paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            paths += _subtree_paths(child, (*path, index))
    return paths


@pytest.mark.parametrize("name", list(JSON_FIXTURES))
def test_structurally_mutated_fixtures_parse_or_are_refused(name):
    rng = random.Random(f"mutate:{name}")
    original = json.loads(fixture_bytes(name))
    paths = [p for p in _subtree_paths(original) if p]
    for _ in range(300):
        document = copy.deepcopy(original)
        for _ in range(rng.randint(1, 3)):
            *parents, last = rng.choice(paths)
            target = document
            try:
                for key in parents:
                    target = target[key]
                target[last] = copy.deepcopy(
                    rng.choice(WRONG_TYPES + ["\u0000", "\udc80", "9" * 5000])
                )
            except (KeyError, IndexError, TypeError):
                continue  # an earlier mutation replaced an ancestor
        parse_or_refuse(encode(document), "application/json")


# --- idempotency ------------------------------------------------------------------------------
def ids_body(**overrides: Any) -> dict[str, Any]:
    parts = {
        "run": {"uuid": "run-1"},
        "node": {"uuid": "node-1"},
        "input": make_input(uuid="input-1"),
    }
    return make_body(**{**parts, **overrides})


def key_of(document: dict[str, Any]) -> str:
    raw = encode(document)
    return parse_webhook(raw, None).idempotency_key(raw)


def test_same_run_node_and_input_give_the_same_key_whatever_else_changes():
    first = ids_body()
    second = ids_body(
        contact=make_contact(name="Outra", fields={"age": 3}),
        input=make_input(uuid="input-1", text="texto reavaliado"),
        results={"extra": make_result(value="x")},
    )
    assert encode(first) != encode(second)
    assert key_of(first) == key_of(second)


@pytest.mark.parametrize(
    "change",
    [
        {"input": make_input(uuid="input-2")},
        {"run": {"uuid": "run-2"}},
        {"node": {"uuid": "node-2"}},
    ],
)
def test_a_different_run_node_or_input_gives_another_key(change):
    assert key_of(ids_body()) != key_of(ids_body(**change))


@pytest.mark.parametrize("missing", ["run", "node", "input"])
def test_without_all_three_ids_the_key_hashes_the_body(missing):
    body = ids_body(**{missing: OMIT})
    raw = encode(body)
    key = parse_webhook(raw, None).idempotency_key(raw)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key != hashlib.sha256(raw).hexdigest()  # prefixed, so it cannot equal an ids key
    assert key == parse_webhook(raw, None).idempotency_key(raw)
    respaced = json.dumps(body, indent=1).encode()
    assert key != parse_webhook(respaced, None).idempotency_key(respaced)


def test_an_ids_key_never_equals_a_body_key():
    with_ids = parse_webhook(encode(ids_body()), None)
    without = dataclasses.replace(with_ids, run_uuid=None)
    for raw in (b"", encode(ids_body()), b"run-1:node-1:input-1", b'["run-1","node-1","input-1"]'):
        assert with_ids.idempotency_key(raw) != without.idempotency_key(raw)
    assert with_ids.idempotency_key(b"a") == with_ids.idempotency_key(b"b")

"""Pure parsing of the flow engine's webhook bodies into one normalised ``InboundMessage``.

The flow engine (RapidPro, TextIt, Weni Flows) POSTs a webhook after a flow's "Wait for
response" step. Four body shapes are understood (``docs/webhook-template.md`` tells flow
builders which to use):

``editor``
    The editor's default Call Webhook body: contact, flow and results only.
``resthook``
    The resthook body: adds ``path``, ``run``, ``input`` (the message) and ``channel``.
``upartners``
    Our template: the resthook body plus ``contact.groups``, ``contact.fields`` and ``node``.
``legacy_form``
    The pre-2017 ``application/x-www-form-urlencoded`` webhook (``values``/``steps`` as JSON
    strings, repeated ``attachments``).

Detection: a form content type means ``legacy_form``; any other body is parsed as JSON,
whatever its content type says. A JSON object with a top-level ``node`` key, or whose
``contact`` has a ``groups`` or ``fields`` key, is ``upartners``; else one with a ``run``,
``path`` or ``input`` key is ``resthook``; anything else is ``editor``. Keys count when present,
whatever their value (``"input": null`` is a resthook whose step had no message).

Precedence, with blank strings counting as absent everywhere:

* step (``node_uuid``): ``node.uuid``; else the LAST ``path`` entry's ``node_uuid`` (older
  entries: else its ``uuid``); else the newest result's ``node_uuid``. For the legacy form, in
  the same roles: ``step``; else the last ``steps`` entry's ``node``; else the newest ``values``
  entry's ``node``.
* text: ``input.text``; else the *message result*'s ``input``; else its ``value``. The message
  result is the one the webhook URL names (``?text=<result>``, by key or name, any case), else
  the result named ``message``, else the only result, else the newest (the editor's default
  body names no node and no time, and the engine writes results in alphabetical order: with
  ``message`` and ``topic`` the newest is ``topic``). Legacy form: ``text``; else the newest
  ``values`` entry's ``text``; else its ``value``. An empty or whitespace-only text is
  normalised to ``None`` (and the next source is tried).
* sent_on: ``input.created_on`` (legacy form: ``time``); else the newest result's
  ``created_on`` (legacy: the newest value's ``time``). Missing or invalid gives ``None``.
* "newest result": the one with the latest ``created_on`` (the later in document order on a
  tie); if no result has a valid ``created_on``, the last one in document order.

Everything here is pure: no Flask, no SQLAlchemy, no I/O. Every failure is an
``InvalidWebhook`` naming the offending fields with dotted paths; no other exception escapes
``parse_webhook`` for any input bytes.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qs

from marshmallow import Schema, ValidationError

from services.ingest import schemas
from shared.text import (
    BAD_KEY_MESSAGE,
    BAD_STRING_MESSAGE,
    find_bad_strings,
    has_forbidden_chars,
    loads_json,
    may_hold_bad_strings,
)

Shape = Literal["editor", "resthook", "upartners", "legacy_form"]

BODY_FIELD = "_body"
"""The field name of errors about the body as a whole (encoding, JSON syntax, type)."""

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


# --- the normalised message -----------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    uuid: str
    name: str | None


@dataclass(frozen=True)
class Attachment:
    content_type: str | None
    url: str


@dataclass(frozen=True)
class Channel:
    """The channel the message came in on; its address (phone number) is never kept."""

    uuid: str | None
    name: str | None


class FrozenMap(Mapping[str, str | None]):
    """A read-only, hashable mapping, so that a frozen dataclass holding it stays hashable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str | None] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> str | None:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True)
class InboundMessage:
    """One contact message, whatever body shape carried it.

    ``contact_name`` and ``urn`` identify the contact: they stay inside the ingest service and
    are never put on events. ``urn`` is kept as sent (a display part like ``#nick`` included).
    ``groups`` and ``fields`` come from the ``upartners`` shape only (empty otherwise).
    ``node_uuid`` is the flow step the message is linked to (see the module docstring for
    where it comes from): in engine-built bodies that is the node running the webhook, which
    directly follows the "Wait for response" node. ``sent_on`` is aware UTC.
    """

    shape: Shape
    contact_uuid: str
    contact_name: str | None
    urn: str | None
    language: str | None
    groups: tuple[Group, ...]
    fields: Mapping[str, str | None]
    flow_uuid: str
    flow_name: str | None
    node_uuid: str | None
    run_uuid: str | None
    input_uuid: str | None
    text: str | None
    attachments: tuple[Attachment, ...]
    channel: Channel | None
    sent_on: datetime | None

    def idempotency_key(self, raw_body: bytes) -> str:
        """A 64-hex-digit key identifying this delivery.

        When the run, the step and the engine's message uuid are all known it depends on them
        only, so a redelivery with other details changed (a retry, a re-evaluated template)
        gets the same key; otherwise it is a hash of the raw body. The two kinds hash inputs
        with different prefixes, so one can never equal the other.
        """
        if self.run_uuid and self.node_uuid and self.input_uuid:
            ids = json.dumps([self.run_uuid, self.node_uuid, self.input_uuid])
            material = b"upartners-webhook-ids:" + ids.encode("utf-8")
        else:
            material = b"upartners-webhook-body:" + bytes(raw_body)
        return hashlib.sha256(material).hexdigest()


class InvalidWebhook(ValueError):
    """The body cannot be read as any webhook shape.

    ``fields`` maps dotted paths (``"contact.uuid"``, ``"values"``, ``"_body"`` for the body as
    a whole) to messages. Field names never contain the offending text.
    """

    def __init__(self, message: str, fields: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.message = message
        self.fields = {name: list(messages) for name, messages in fields.items()}

    def __str__(self) -> str:
        return self.message


# --- entry point --------------------------------------------------------------------------------
def parse_webhook(
    raw_body: bytes, content_type: str | None, text_result: str | None = None
) -> InboundMessage:
    """Parse a webhook body into an ``InboundMessage``; raise ``InvalidWebhook`` if impossible.
    ``text_result`` names the result that holds the contact's message (the URL's ``?text=``)."""
    media_type, params = _parse_content_type(content_type)
    # A form body never starts with "{"; a JSON object sent with the form type (curl's default
    # for --data) is still JSON.
    if media_type == FORM_CONTENT_TYPE and not raw_body.lstrip().startswith(b"{"):
        return _parse_legacy_form(bytes(raw_body), params.get("charset"))
    return _parse_json(bytes(raw_body), text_result)


def detect_shape(document: Mapping[str, Any]) -> Shape:
    """The shape of a decoded JSON body (see the module docstring)."""
    contact = document.get("contact")
    if "node" in document or (
        isinstance(contact, dict) and ("groups" in contact or "fields" in contact)
    ):
        return "upartners"
    if "run" in document or "path" in document or "input" in document:
        return "resthook"
    return "editor"


_JSON_SCHEMAS: dict[str, Schema] = {
    "editor": schemas.EditorBodySchema(),
    "resthook": schemas.ResthookBodySchema(),
    "upartners": schemas.UPartnersBodySchema(),
}
_LEGACY_SCHEMA = schemas.LegacyFormSchema()


def _parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "", {}
    media_type, *raw_params = value.split(";")
    params: dict[str, str] = {}
    for raw in raw_params:
        name, equals, param = raw.partition("=")
        if equals:
            params[name.strip().lower()] = param.strip().strip('"').strip()
    return media_type.strip().lower(), params


def _decode(raw_body: bytes, encoding: str) -> str:
    try:
        return raw_body.decode(encoding)
    except UnicodeDecodeError:
        raise InvalidWebhook(
            f"The body is not valid {encoding}.", {BODY_FIELD: [f"Not valid {encoding}."]}
        ) from None


def _load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise InvalidWebhook(
            "The webhook body is missing required data or has invalid data.",
            schemas.flatten_errors(exc.messages),
        ) from None


# --- JSON shapes ------------------------------------------------------------------------------
def _parse_json(raw_body: bytes, text_result: str | None = None) -> InboundMessage:
    text = _decode(raw_body, "utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        document = loads_json(text)
    except ValueError:
        raise InvalidWebhook(
            "The body is not valid JSON.", {BODY_FIELD: ["Not valid JSON."]}
        ) from None
    if not isinstance(document, dict):
        raise InvalidWebhook(
            "The body is not a JSON object.", {BODY_FIELD: ["Must be a JSON object."]}
        )
    bad = find_bad_strings(document) if may_hold_bad_strings(text) else None
    if bad:
        raise InvalidWebhook("The body contains forbidden characters.", bad)
    shape = detect_shape(document)
    data = _load(_JSON_SCHEMAS[shape], document)
    return _from_json(shape, data, text_result)


def _from_json(shape: Shape, data: dict[str, Any], text_result: str | None) -> InboundMessage:
    contact, flow = data["contact"], data["flow"]
    message = data.get("input") or {}
    named = {
        key: _Result(
            node_uuid=r["node_uuid"], input=r["input"], value=r["value"], created_on=r["created_on"]
        )
        for key, r in data["results"].items()
    }
    results = list(named.values())
    newest = _newest(results)
    said = _message_result(named, data["results"], text_result) or newest
    node = data.get("node") or {}
    path = data.get("path") or []
    last_step = path[-1] if path else None
    channel = message.get("channel") or data.get("channel")
    return InboundMessage(
        shape=shape,
        contact_uuid=contact["uuid"],
        contact_name=contact["name"],
        urn=contact["urn"] or message.get("urn"),
        language=contact["language"],
        groups=_groups(contact.get("groups") or []),
        fields=FrozenMap(contact.get("contact_fields") or {}),
        flow_uuid=flow["uuid"],
        flow_name=flow["name"],
        node_uuid=_first(
            node.get("uuid"),
            last_step and (last_step["node_uuid"] or last_step["uuid"]),
            newest and newest.node_uuid,
        ),
        run_uuid=(data.get("run") or {}).get("uuid"),
        input_uuid=message.get("uuid"),
        text=_first(message.get("text"), said and said.input, said and said.value),
        attachments=_attachments(message.get("attachments") or []),
        channel=_channel(channel),
        sent_on=message.get("created_on") or (newest and newest.created_on) or None,
    )


# --- the legacy form ----------------------------------------------------------------------------
_FORM_ENCODINGS = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})
"""Text encodings a form body may declare (by their ``codecs`` names); utf-8 if none."""


def _form_encoding(charset: str | None) -> str:
    try:
        encoding = codecs.lookup(charset or "utf-8").name
    except LookupError:
        encoding = ""
    if encoding not in _FORM_ENCODINGS:
        raise InvalidWebhook(
            "The body's charset is not supported.", {BODY_FIELD: ["Unsupported charset."]}
        )
    return encoding


def _parse_legacy_form(raw_body: bytes, charset: str | None) -> InboundMessage:
    encoding = _form_encoding(charset)
    text = _decode(raw_body, encoding)
    try:
        parsed = parse_qs(text, keep_blank_values=True, encoding=encoding, errors="strict")
    except UnicodeDecodeError:
        raise InvalidWebhook(
            f"The form has a value that is not valid {encoding}.",
            {BODY_FIELD: [f"Not valid {encoding}."]},
        ) from None
    bad: dict[str, list[str]] = {}
    for name, values in parsed.items():
        if has_forbidden_chars(name):
            bad[BODY_FIELD] = [BAD_KEY_MESSAGE]
        elif any(has_forbidden_chars(value) for value in values):
            bad[name] = [BAD_STRING_MESSAGE]
    if bad:
        raise InvalidWebhook("The form contains forbidden characters.", bad)
    form: dict[str, Any] = {name: values[0] for name, values in parsed.items()}
    form["attachments"] = parsed.get("attachments", [])
    data = _load(_LEGACY_SCHEMA, form)
    return _from_legacy(data)


def _from_legacy(data: dict[str, Any]) -> InboundMessage:
    values = [
        _Result(node_uuid=v["node"], input=v["text"], value=v["value"], created_on=v["time"])
        for v in data["values"]
        if v is not None
    ]
    newest = _newest(values)
    steps = data["steps"]
    last_step = steps[-1] if steps else None
    channel_uuid = data["channel_uuid"]
    return InboundMessage(
        shape="legacy_form",
        contact_uuid=data["contact"],
        contact_name=data["contact_name"],
        urn=data["urn"],
        language=None,
        groups=(),
        fields=FrozenMap(),
        flow_uuid=data["flow_uuid"],
        flow_name=data["flow_name"],
        node_uuid=_first(
            data["step"], last_step and last_step["node"], newest and newest.node_uuid
        ),
        run_uuid=None,  # the legacy run is an integer id, not a uuid
        input_uuid=None,
        text=_first(data["text"], newest and newest.input, newest and newest.value),
        attachments=_attachments(data["attachments"]),
        channel=Channel(uuid=channel_uuid, name=None) if channel_uuid else None,
        sent_on=data["time"] or (newest and newest.created_on) or None,
    )


# --- shared helpers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Result:
    node_uuid: str | None
    input: str | None
    value: str | None
    created_on: datetime | None


def _newest(results: list[_Result]) -> _Result | None:
    """The latest by ``created_on`` (later in document order on a tie); if none is dated,
    the last in document order."""
    dated = [(r.created_on, i, r) for i, r in enumerate(results) if r.created_on is not None]
    if dated:
        return max(dated, key=lambda entry: entry[:2])[2]
    return results[-1] if results else None


def _message_result(
    results: dict[str, _Result], loaded: dict[str, dict[str, Any]], wanted: str | None
) -> _Result | None:
    """The result that holds the contact's message: the one ``wanted`` names (its key, or its
    name, in any case), else the one named ``message``, else the only one; None: the newest."""

    def find(name: str) -> _Result | None:
        name = name.strip().casefold()
        for key, result in results.items():
            if name in (key.casefold(), (loaded[key].get("name") or "").strip().casefold()):
                return result
        return None

    if wanted and wanted.strip() and (chosen := find(wanted)) is not None:
        return chosen
    if (chosen := find("message")) is not None:
        return chosen
    return results[next(iter(results))] if len(results) == 1 else None


def _first(*candidates: str | None) -> str | None:
    """The first candidate that is a non-blank string (schemas already turned blanks to None)."""
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return None


def _groups(loaded: list[dict[str, Any] | None]) -> tuple[Group, ...]:
    seen: set[str] = set()
    groups: list[Group] = []
    for entry in loaded:
        if entry and entry["uuid"] and entry["uuid"] not in seen:
            seen.add(entry["uuid"])
            groups.append(Group(uuid=entry["uuid"], name=entry["name"]))
    return tuple(groups)


def _attachments(loaded: list[dict[str, Any] | None]) -> tuple[Attachment, ...]:
    return tuple(
        Attachment(content_type=entry["content_type"], url=entry["url"])
        for entry in loaded
        if entry is not None
    )


def _channel(loaded: Mapping[str, Any] | None) -> Channel | None:
    if not loaded or not (loaded["uuid"] or loaded["name"]):
        return None
    return Channel(uuid=loaded["uuid"], name=loaded["name"])

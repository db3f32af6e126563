"""Marshmallow schemas of the webhook bodies the flow engine POSTs to the ingest service.

Four body shapes arrive (see ``docs/webhook-template.md``):

* ``EditorBodySchema``: the flow editor's default Call Webhook body (contact, flow, results);
* ``ResthookBodySchema``: the resthook body (adds path, run, input, channel);
* ``UPartnersBodySchema``: our own template (adds contact.groups, contact.fields and node);
* ``LegacyFormSchema``: the legacy form-encoded webhook, once parsed into a dict by
  ``services.ingest.domain`` (``values`` and ``steps`` are JSON strings).

Every schema EXCLUDES unknown keys. Only the contact's and the flow's identifiers are required;
every other part is optional and *lenient*: a value of the wrong type (``path`` that is not a
list, a number where text was expected, an unparseable timestamp) becomes ``None`` (or an empty
list or mapping) instead of an error, because a flow builder's odd template must not cost a
contact their message. Blank strings load as ``None``. Identifiers longer than
``MAX_ID_LENGTH`` are refused when required and dropped when optional. The channel's address
is never loaded.

The schemas only load: they never dump. They are pure (no I/O).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load

from shared.text import find_bad_strings, loads_json

MAX_ID_LENGTH = 64
"""The longest identifier (uuid) accepted; the ingest tables store them as ``String(64)``."""


# --- helpers shared with the domain ---------------------------------------------------------
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime; ``None`` if absent or not RFC 3339.

    Accepts ``Z`` or a numeric offset and any number of fraction digits (Go may write up to
    nine: digits beyond microseconds are truncated). A timestamp without an offset is refused:
    its instant is unknown.
    """
    if not isinstance(value, str):
        return None
    if _is_engine_form(value):  # the engine's own form: ten times quicker than the pattern
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # e.g. a 30th of February: the pattern's road says the same
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    micros = int((match[7] or "")[:6].ljust(6, "0"))
    zone = match[8]
    try:
        if zone in ("Z", "z"):
            tz: timezone = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        moment = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _is_engine_form(value: str) -> bool:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``, as the flow engine writes every timestamp: its other
    characters are then digits or the parse fails (``fromisoformat`` takes ASCII digits only),
    so ``fromisoformat`` accepts exactly what the pattern does (tests/unit/test_ingest_parsing.py
    compares the two on variants of it)."""
    return (
        len(value) == 27
        and value[26] == "Z"
        and value[4] == value[7] == "-"
        and value[10] == "T"
        and value[13] == value[16] == ":"
        and value[19] == "."
    )


def flatten_errors(messages: object, prefix: str = "") -> dict[str, list[str]]:
    """Marshmallow's nested error messages as ``{"dotted.path": [messages]}``.

    ``_schema`` levels collapse into their parent's path; top-level errors go to ``"_body"``.
    """
    flat: dict[str, list[str]] = {}

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                name = str(key)
                if name == "_schema":
                    walk(child, path)
                else:
                    walk(child, f"{path}.{name}" if path else name)
        elif isinstance(node, list | tuple):
            for child in node:
                walk(child, path)
        else:
            flat.setdefault(path or "_body", []).append(str(node))

    walk(messages, prefix)
    return flat


_MIME_TYPE = re.compile(r"[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*")


def parse_attachment(item: object) -> dict[str, str | None] | None:
    """An attachment as ``{"content_type", "url"}``, or ``None`` if it carries no URL.

    Accepts the object form ``{"content_type": ..., "url": ...}`` and the engine's string
    form ``"image/jpeg:https://..."`` (also ``"geo:lat,lng"``). A string without a recognisable
    content type is kept whole as the URL.
    """
    if isinstance(item, dict):
        url = _clean_text(item.get("url"))
        content_type = _clean_text(item.get("content_type"))
    elif isinstance(item, str):
        prefix, colon, rest = item.partition(":")
        if colon and rest.strip() and (prefix == "geo" or _MIME_TYPE.fullmatch(prefix)):
            content_type, url = prefix, rest
        else:
            content_type, url = None, item
        url = _clean_text(url)
    else:
        return None
    if url is None:
        return None
    return {"content_type": content_type, "url": url}


def _clean_text(value: object) -> str | None:
    """A non-blank string as sent, else ``None``."""
    if isinstance(value, str) and value.strip():
        return value
    return None


def _clean_id(value: object) -> str | None:
    """A non-blank identifier, stripped, no longer than ``MAX_ID_LENGTH``; else ``None``."""
    if isinstance(value, str):
        value = value.strip()
        if value and len(value) <= MAX_ID_LENGTH:
            return value
    return None


# --- lenient fields ---------------------------------------------------------------------------
class _Lenient(fields.Field):
    """Optional: missing or null loads as ``empty()``; the conversion never raises."""

    def __init__(
        self, convert: Callable[[Any], Any], empty: Callable[[], Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(load_default=None, allow_none=True, **kwargs)
        self._convert = convert
        self._empty = empty

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any):
        result = super().deserialize(value, attr, data, **kwargs)
        if result is None and self._empty is not None:
            return self._empty()
        return result

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return self._convert(value)


def Text() -> fields.Field:  # a field factory, named like a field class
    """Optional text: non-string or blank gives ``None``; otherwise kept exactly as sent."""
    return _Lenient(_clean_text)


def Id() -> fields.Field:
    """Optional identifier: stripped; non-string, blank or too long gives ``None``."""
    return _Lenient(_clean_id)


def Timestamp() -> fields.Field:
    """Optional RFC 3339 timestamp as an aware UTC datetime; anything else gives ``None``."""
    return _Lenient(parse_timestamp)


def Object(schema: Schema) -> fields.Field:
    """Optional nested object loaded with ``schema`` (itself lenient); non-object gives ``None``."""
    return _Lenient(_load_if_object(schema))


def ListOf(item: Callable[[Any], Any]) -> fields.Field:
    """Optional list; a non-list gives ``[]``. Items ``item`` rejects become ``None`` in place,
    so that "the last entry" still means the last one sent."""
    return _Lenient(lambda value: [item(v) for v in value] if isinstance(value, list) else [], list)


def _load_if_object(schema: Schema) -> Callable[[Any], Any]:
    return lambda value: schema.load(value) if isinstance(value, dict) else None


def _field_value(value: object) -> tuple[bool, str | None]:
    """(keep, value) for a contact field: text as sent, numbers as text, null as ``None``."""
    if value is None:
        return True, None
    if isinstance(value, bool):
        return True, "true" if value else "false"
    if isinstance(value, int):
        return True, str(value)
    if isinstance(value, float):
        return (True, repr(value)) if math.isfinite(value) else (False, None)
    if isinstance(value, str):
        return True, value
    return False, None  # objects and lists are not field values


def _contact_fields(value: object) -> dict[str, str | None]:
    if not isinstance(value, dict):
        return {}
    loaded: dict[str, str | None] = {}
    for key, raw in value.items():
        keep, text = _field_value(raw)
        if keep and isinstance(key, str) and key.strip():
            loaded[key] = text
    return loaded


# --- JSON bodies ------------------------------------------------------------------------------
class _Base(Schema):
    """Loads like any marshmallow schema; a body whose every part loads without an error takes
    a quicker road to the same result (``_quick_load``), a fifth of the ingest's CPU per webhook
    before (marshmallow spends microseconds per field on work these fields never need)."""

    class Meta:
        unknown = EXCLUDE

    def load(self, data: Any, **kwargs: Any) -> Any:
        if not kwargs and isinstance(data, dict):
            loaded = _quick_load(self, data)
            if loaded is not None:
                return loaded
        return super().load(data, **kwargs)  # the errors, worded and placed by marshmallow


def _quick_load(schema: Schema, data: dict) -> dict[str, Any] | None:
    """``schema.load(data)`` for a schema of lenient fields, required identifiers and required
    nested schemas of the same kinds; ``None`` where marshmallow would raise (a required part
    missing or invalid) or could do something this does not (a pre-load hook changing the
    data): the caller then loads it with marshmallow. tests/unit/test_ingest_schemas.py checks
    both roads give the same on every fixture and on odd bodies."""
    plan = _plan_of(schema)
    if plan is None:
        return None
    loaded: dict[str, Any] = {}
    for name, key, kind, convert, empty in plan:
        value = data.get(key)  # absent and null load alike
        if kind is _LENIENT:
            result = None if value is None else convert(value)
            loaded[name] = empty() if result is None and empty is not None else result
        elif kind is _REQUIRED_ID:
            if not isinstance(value, str) or not (text := value.strip()):
                return None
            if len(text) > MAX_ID_LENGTH:
                return None
            loaded[name] = text
        else:  # a required nested schema (``convert``)
            if not isinstance(value, dict):
                return None
            inner = _quick_load(convert, value)
            if inner is None:
                return None
            loaded[name] = inner
    return loaded


_LENIENT, _REQUIRED_ID, _NESTED = "lenient", "required id", "nested"


@functools.cache
def _plan_of(schema: Schema) -> tuple[tuple[str, str, str, Any, Any], ...] | None:
    """How ``_quick_load`` takes each of a schema's fields, worked out once per schema (the
    schemas are module-level instances): looking at every field's class at every webhook was a
    quarter of the quick road's Python calls. ``None`` for a schema it cannot load."""
    plan = []
    for name, field in schema.load_fields.items():
        key = field.data_key or name
        if isinstance(field, _Lenient):
            plan.append((name, key, _LENIENT, field._convert, field._empty))
        elif isinstance(field, RequiredId):
            plan.append((name, key, _REQUIRED_ID, None, None))
        elif isinstance(field, fields.Nested) and field.required:
            if not isinstance(field.schema, _Base):
                return None
            plan.append((name, key, _NESTED, field.schema, None))
        else:
            return None
    return tuple(plan)


class RequiredId(fields.String):
    """A required identifier: a non-blank string, stripped, at most ``MAX_ID_LENGTH`` long."""

    default_error_messages = {
        "blank": "Must not be blank.",
        "too_long": f"Longer than maximum length {MAX_ID_LENGTH}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not text:
            raise self.make_error("blank")
        if len(text) > MAX_ID_LENGTH:
            raise self.make_error("too_long")
        return text


class GroupSchema(_Base):
    uuid = Id()
    name = Text()


class ContactSchema(_Base):
    uuid = RequiredId()
    name = Text()
    urn = Text()
    language = Text()


class UPartnersContactSchema(ContactSchema):
    groups = ListOf(_load_if_object(GroupSchema()))
    contact_fields = _Lenient(_contact_fields, dict, data_key="fields")


class FlowSchema(_Base):
    uuid = RequiredId()
    name = Text()


class ResultSchema(_Base):
    name = Text()
    value = Text()
    category = Text()
    input = Text()
    node_uuid = Id()
    created_on = Timestamp()


_RESULT = ResultSchema()


def _results(value: object) -> dict[str, dict[str, Any]]:
    """Results by key in document order; a bare string result is taken as its value."""
    if not isinstance(value, dict):
        return {}
    loaded: dict[str, dict[str, Any]] = {}
    for key, raw in value.items():
        if isinstance(raw, dict):
            loaded[key] = _RESULT.load(raw)
        elif isinstance(raw, str):
            loaded[key] = _RESULT.load({"value": raw})
    return loaded


class PathStepSchema(_Base):
    node_uuid = Id()
    uuid = Id()  # older engines: the step's own uuid, next to node_uuid and exit_uuid
    exit_uuid = Id()
    arrived_on = Timestamp()


class RunSchema(_Base):
    uuid = Id()
    created_on = Timestamp()


class ChannelSchema(_Base):
    """A channel's identity; its ``address`` (the channel's own number) is never loaded."""

    uuid = Id()
    name = Text()


def _urn(value: object) -> str | None:
    """The input's URN: a string as sent, or ``scheme:path`` from the ``{scheme, path}`` form."""
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        scheme, path = _clean_text(value.get("scheme")), _clean_text(value.get("path"))
        if scheme and path:
            return f"{scheme}:{path}"
    return None


class InputSchema(_Base):
    uuid = Id()
    type = Text()
    text = Text()
    attachments = ListOf(parse_attachment)
    channel = Object(ChannelSchema())
    urn = _Lenient(_urn)
    created_on = Timestamp()


class NodeSchema(_Base):
    uuid = Id()


class EditorBodySchema(_Base):
    """The editor's default body: ``{contact {uuid, name, urn}, flow {uuid, name}, results}``."""

    contact = fields.Nested(ContactSchema(), required=True)
    flow = fields.Nested(FlowSchema(), required=True)
    results = _Lenient(_results, dict)

    @pre_load
    def _name_the_missing_uuids(self, data: Any, **kwargs: Any) -> Any:
        """A missing ``contact`` or ``flow`` is reported as its missing ``uuid``."""
        if isinstance(data, dict) and not {"contact", "flow"} <= data.keys():
            return {"contact": {}, "flow": {}, **data}
        return data


class ResthookBodySchema(EditorBodySchema):
    """The resthook body: the editor's plus ``path``, ``run``, ``input`` and ``channel``."""

    path = ListOf(_load_if_object(PathStepSchema()))
    run = Object(RunSchema())
    input = Object(InputSchema())
    channel = Object(ChannelSchema())


class UPartnersBodySchema(ResthookBodySchema):
    """Our template: the resthook body plus ``contact.groups``, ``contact.fields``, ``node``."""

    contact = fields.Nested(UPartnersContactSchema(), required=True)
    node = Object(NodeSchema())


# --- the legacy form --------------------------------------------------------------------------
class LegacyValueSchema(_Base):
    """One entry of the legacy ``values`` list (a saved result)."""

    node = Id()
    label = Text()
    text = Text()
    value = Text()
    rule_value = Text()
    time = Timestamp()


class LegacyStepSchema(_Base):
    """One entry of the legacy ``steps`` list (a visited node)."""

    node = Id()
    type = Text()
    text = Text()
    value = Text()
    arrived_on = Timestamp()
    left_on = Timestamp()


class JsonStringList(fields.Field):
    """A JSON string holding a list of objects (legacy ``values``/``steps``); malformed JSON,
    a non-list, or a string with NUL/unpaired surrogates is an error. Entries that are not
    objects become ``None`` in place."""

    default_error_messages = {
        "invalid": "Not a valid string.",
        "json": "Not valid JSON.",
        "list": "Must be a JSON list.",
    }

    def __init__(self, item: Schema, **kwargs: Any) -> None:
        super().__init__(load_default=list, allow_none=True, **kwargs)
        self._item = item

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any):
        result = super().deserialize(value, attr, data, **kwargs)
        return [] if result is None else result

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        if not value.strip():
            return []
        try:
            document = loads_json(value)
        except ValueError as exc:
            raise self.make_error("json") from exc
        if not isinstance(document, list):
            raise self.make_error("list")
        bad = find_bad_strings(document)
        if bad:
            raise ValidationError(bad)
        return [self._item.load(entry) if isinstance(entry, dict) else None for entry in document]


class LegacyFormSchema(_Base):
    """The legacy form, as ``{field: first value}`` plus ``attachments: [every value]``."""

    contact = RequiredId()
    contact_name = Text()
    urn = Text()
    flow_uuid = RequiredId()
    flow_name = Text()
    step = Id()
    text = Text()
    time = Timestamp()
    channel_uuid = Id()
    attachments = ListOf(parse_attachment)
    values = JsonStringList(LegacyValueSchema())
    steps = JsonStringList(LegacyStepSchema())

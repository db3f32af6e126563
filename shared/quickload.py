"""Marshmallow's ``load`` without its machinery, for the plain data the services' own writers
produce: the events' envelopes and data (shared/events.py).

Every consumer reads every event through its schema; marshmallow spends microseconds on each
field (hooks, error bookkeeping, partial loading) where the data is what our strict writer
already checked. ``quick_load`` walks the same fields with the same conversions (strings,
integers, booleans, ISO date-times, lists, dicts, nested schemas, and their validators) and
gives up, answering ``None``, wherever marshmallow would raise or could do something it does
not: the caller then loads with marshmallow, which gives the same result or the worded error.
tests/unit/test_quickload.py checks both give the same on every event schema, on valid data and
on data with each field missing or of a wrong type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, missing

_NO = object()  # "marshmallow must decide"


def quick_load(schema: Schema, data: Any, unknown: str | None = None) -> dict[str, Any] | None:
    """``schema.load(data, unknown=unknown)``, or ``None`` where marshmallow must decide."""
    if type(data) is not dict or _has_hooks(schema):
        return None
    unknown = unknown or schema.unknown
    if unknown == INCLUDE:
        return None
    if unknown == RAISE and any(key not in _data_keys(schema) for key in data):
        return None  # marshmallow raises on an unknown key
    loaded: dict[str, Any] = {}
    for name, field in schema.load_fields.items():
        key = field.data_key or name
        if key in data:
            value = _value(field, data[key])
            if value is _NO:
                return None
        elif field.required:
            return None
        elif field.load_default is missing:
            continue
        else:
            default = field.load_default
            value = default() if callable(default) else default
        loaded[field.attribute or name] = value
    return loaded


def _data_keys(schema: Schema) -> set[str]:
    return {field.data_key or name for name, field in schema.load_fields.items()}


def _has_hooks(schema: Schema) -> bool:
    """Hooks run code of the schema's own: those schemas are marshmallow's to load."""
    hooks = ("pre_load", "post_load", "validates", "validates_schema")
    return any(schema._hooks.get(kind) for kind in hooks)


def _value(field: fields.Field, value: Any) -> Any:
    if value is None:
        return None if field.allow_none else _NO
    kind = type(field)
    if kind is fields.String:
        if type(value) is not str:
            return _NO
    elif kind is fields.Integer:
        if type(value) is not int:
            return _NO
    elif kind is fields.Boolean:
        if type(value) is not bool:
            return _NO
    elif kind is fields.AwareDateTime:
        value = _aware(field, value)
    elif kind is fields.List:
        if type(value) is not list:
            return _NO
        value = [_value(field.inner, item) for item in value]
        if any(item is _NO for item in value):
            return _NO
    elif kind is fields.Dict:
        value = _mapping(field, value)
    elif kind is fields.Nested and isinstance(field.schema, Schema) and not field.many:
        loaded = quick_load(field.schema, value, field.unknown)
        value = _NO if loaded is None else loaded
    else:
        return _NO
    if value is _NO:
        return _NO
    for validator in field.validators:
        try:
            validator(value)
        except ValidationError:
            return _NO
    return value


def _aware(field: fields.AwareDateTime, value: Any) -> Any:
    if type(value) is not str or not value or field.format not in (None, "iso", "iso8601"):
        return _NO
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _NO
    if moment.tzinfo is None:
        if field.default_timezone is None:
            return _NO
        moment = moment.replace(tzinfo=field.default_timezone)
    return moment


def _mapping(field: fields.Dict, value: Any) -> Any:
    if type(value) is not dict:
        return _NO
    if field.key_field is None and field.value_field is None:
        return dict(value)
    loaded = {}
    for key, item in value.items():
        if field.key_field is not None:
            key = _value(field.key_field, key)
        if field.value_field is not None:
            item = _value(field.value_field, item)
        if key is _NO or item is _NO:
            return _NO
        loaded[key] = item
    return loaded

"""Marshmallow's ``load`` and ``dump`` without their machinery, for the plain data the services'
own writers produce: the events' envelopes and data (shared/events.py).

Every consumer reads every event through its schema; marshmallow spends microseconds on each
field (hooks, error bookkeeping, partial loading) where the data is what our strict writer
already checked. ``quick_load`` walks the same fields with the same conversions (strings,
integers, booleans, ISO date-times, lists, dicts, nested schemas, and their validators) and
gives up, answering ``None``, wherever marshmallow would raise or could do something it does
not: the caller then loads with marshmallow, which gives the same result or the worded error.
``quick_dump`` does the same for writing (a writer loads its data strictly, then dumps it).
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


_LOAD_HOOKS = ("pre_load", "post_load", "validates", "validates_schema")


def _has_hooks(schema: Schema, hooks: tuple[str, ...] = _LOAD_HOOKS) -> bool:
    """Hooks run code of the schema's own: those schemas are marshmallow's to load (or dump)."""
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


def quick_dump(schema: Schema, obj: dict[str, Any]) -> dict[str, Any] | None:
    """``schema.dump(obj)`` for what ``quick_load`` loaded, or ``None`` where marshmallow must."""
    if _has_hooks(schema, ("pre_dump", "post_dump")):
        return None
    dumped: dict[str, Any] = {}
    for name, field in schema.dump_fields.items():
        attribute = field.attribute or name
        if attribute not in obj:
            if field.dump_default is not missing:
                return None
            continue
        value = _dumped(field, obj[attribute])
        if value is _NO:
            return None
        dumped[field.data_key or name] = value
    return dumped


def _dumped(field: fields.Field, value: Any) -> Any:
    if value is None:
        return None
    kind = type(field)
    if kind in _PLAIN:
        return value if type(value) is _PLAIN[kind] else _NO
    if kind is fields.AwareDateTime:
        ok = type(value) is datetime and field.format in (None, "iso", "iso8601")
        return value.isoformat() if ok else _NO
    if kind is fields.List and type(value) is list:
        items = [_dumped(field.inner, item) for item in value]
        return _NO if any(item is _NO for item in items) else items
    if kind is fields.Dict and type(value) is dict:
        if field.key_field is None and field.value_field is None:
            return dict(value)
        items = {
            (_dumped(field.key_field, k) if field.key_field else k): (
                _dumped(field.value_field, v) if field.value_field else v
            )
            for k, v in value.items()
        }
        return _NO if _NO in items or any(v is _NO for v in items.values()) else items
    if kind is fields.Nested and isinstance(field.schema, Schema) and type(value) is dict:
        nested = quick_dump(field.schema, value)
        return _NO if nested is None else nested
    return _NO


_PLAIN: dict[type, type] = {fields.String: str, fields.Integer: int, fields.Boolean: bool}

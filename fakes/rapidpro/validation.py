"""How the fake reads request bodies: JSON parsing and the API v2 field checks, which fail with
:class:`ApiError` carrying RapidPro's error body, and the ``/_fake/`` control endpoints' body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from flask import request

from .state import Contact, ControlError, Group, Workspace, find_by_name, find_contact, find_group

MAX_LIST_ITEMS = 100
MAX_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 4096


class ApiError(Exception):
    """An API answer other than success: status, JSON body, extra headers."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class FieldErrors(dict[str, list[str]]):
    def add(self, name: str, message: str) -> None:
        self.setdefault(name, []).append(message)

    def raise_any(self) -> None:
        if self:
            raise ApiError(400, dict(self))


def non_field(message: str) -> ApiError:
    return ApiError(400, {"non_field_errors": [message]})


def api_body() -> dict[str, Any]:
    raw = request.get_data()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, {"detail": f"JSON parse error - {exc}"}) from exc
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise non_field(f"Invalid data. Expected a dictionary, but got {kind}.")
    return data


def list_field(
    data: dict[str, Any], name: str, errors: FieldErrors, *, required: bool = False
) -> list[Any] | None:
    if name not in data:
        if required:
            errors.add(name, "This field is required.")
        return None
    value = data[name]
    if value is None:
        errors.add(name, "This field may not be null.")
    elif not isinstance(value, list):
        errors.add(name, f'Expected a list of items but got type "{type(value).__name__}".')
    elif len(value) > MAX_LIST_ITEMS:
        errors.add(name, f"Ensure this field has no more than {MAX_LIST_ITEMS} elements.")
    else:
        return value
    return None


def choice(data: dict[str, Any], name: str, choices: Iterable[str], errors: FieldErrors) -> Any:
    if name not in data:
        errors.add(name, "This field is required.")
        return None
    value = data[name]
    if value not in tuple(choices):
        errors.add(name, f'"{value}" is not a valid choice.')
        return None
    return value


def boolean(data: dict[str, Any], name: str, default: bool, errors: FieldErrors) -> bool:
    value = data.get(name, default)
    if value in (True, 1, "true", "True", "1"):
        return True
    if value in (False, 0, "false", "False", "0"):
        return False
    errors.add(name, "Must be a valid boolean.")
    return default


def contacts_field(
    ws: Workspace, data: dict[str, Any], name: str, errors: FieldErrors, *, required: bool = False
) -> list[Contact]:
    refs = list_field(data, name, errors, required=required)
    contacts: list[Contact] = []
    for ref in refs or []:
        contact = find_contact(ws, ref)
        if contact is None:
            errors.add(name, f"No such object: {ref}")
            return []
        contacts.append(contact)
    return contacts


def groups_field(ws: Workspace, data: dict[str, Any], errors: FieldErrors) -> list[Group]:
    groups: list[Group] = []
    for ref in list_field(data, "groups", errors) or []:
        group = find_group(ws, ref)
        if group is None:
            errors.add("groups", f"No such object: {ref}")
            return []
        groups.append(group)
    return groups


def check_name(name: Any, errors: FieldErrors, existing: Iterable[Any]) -> None:
    if name is None:
        errors.add("name", "This field is required.")
    elif name == "":
        errors.add("name", "This field may not be blank.")
    elif not isinstance(name, str):
        errors.add("name", "Not a valid string.")
    elif len(name) > MAX_NAME_LENGTH:
        errors.add("name", f"Ensure this field has no more than {MAX_NAME_LENGTH} characters.")
    elif '"' in name:
        errors.add("name", 'Cannot contain the character: "')
    elif find_by_name(existing, name):
        errors.add("name", "This field must be unique.")


def text_and_attachments(data: dict[str, Any], errors: FieldErrors) -> tuple[Any, list[str]]:
    text = data.get("text")
    if text is not None and not isinstance(text, str | dict):
        errors.add("text", "Not a valid string.")
        text = None
    elif isinstance(text, str) and len(text) > MAX_TEXT_LENGTH:
        errors.add("text", f"Ensure this field has no more than {MAX_TEXT_LENGTH} characters.")
    attachments = data.get("attachments") or []
    if not isinstance(attachments, list):
        errors.add("attachments", "Expected a list of items.")
        attachments = []
    elif len(attachments) > 10:
        errors.add("attachments", "Ensure this field has no more than 10 elements.")
    for item in attachments:
        if not isinstance(item, str) or ":" not in item:
            errors.add("attachments", f"No such object: {item}")
            break
    return text, attachments


def control_body() -> dict[str, Any]:
    data = request.get_json(silent=True, force=True)
    if data is None and request.get_data().strip():
        raise ControlError("body must be JSON")
    if data is not None and not isinstance(data, dict):
        raise ControlError("body must be a JSON object")
    return data or {}

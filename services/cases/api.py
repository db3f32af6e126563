"""HTTP only: authenticate the bearer token, parse with the schemas, call a handler, shape the
answer. Every route is under ``/api/v1`` and answers JSON; errors use the one shape of
shared/http.py.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from werkzeug.routing import BaseConverter

from services.cases import openapi, views
from services.cases import schemas as s
from services.cases.domain import (
    Actor,
    CasesError,
    Conflict,
    Forbidden,
    Invalid,
    InvalidCursor,
    NotFound,
)
from services.cases.handlers import (
    access,
    case_reads,
    cases,
    inbox,
    labels,
    notifications,
    org,
    people,
    replies,
)
from shared.http import ApiError, error_response, health_blueprint
from shared.text import loads_json
from shared.uow import ServiceStore

bp = Blueprint("cases", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = {"cases.openapi_document"}


class IdConverter(BaseConverter):
    """A path id: at most 64 characters, no NUL (which PostgreSQL cannot compare), and not one
    of the fixed words that stand beside ids (``/messages/actions``, ``/messages/counts``): else
    ``GET /messages/actions`` would read a message called "actions", and the ``Allow`` header of
    ``/messages/actions`` would offer GET."""

    regex = r"(?!(?:actions|counts)(?![^/]))[^/\x00]{1,64}"


def register(app: Flask) -> None:
    """Wire the API into an app: the id converter, the error mapping, the blueprints."""
    app.url_map.converters["id"] = IdConverter
    app.register_error_handler(CasesError, _cases_error)
    app.register_error_handler(InvalidCursor, _cursor_error)
    app.register_blueprint(bp)
    app.register_blueprint(health_blueprint())


def _cases_error(exc: CasesError):
    if isinstance(exc, NotFound):
        return error_response(404, f"{exc.kind.upper()}_NOT_FOUND", str(exc))
    if isinstance(exc, Forbidden):
        return error_response(403, "FORBIDDEN", str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, exc.code, str(exc))
    if isinstance(exc, Invalid):
        return error_response(422, "INVALID_FIELDS", str(exc), exc.fields)
    raise exc


def _cursor_error(exc: InvalidCursor):
    return error_response(400, "INVALID_CURSOR", str(exc), {"cursor": [str(exc)]})


# --- plumbing -----------------------------------------------------------------------------------
def _store() -> ServiceStore:
    return current_app.extensions["upartners.store"]


def _actor() -> Actor:
    return g.actor


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    actor = None
    if scheme.lower() == "bearer" and token.strip():
        actor = access.authenticate(_store(), token.strip())
    if actor is None:
        raise ApiError(401, "UNAUTHORIZED", "Missing, invalid or revoked bearer token.")
    g.actor = actor


@bp.after_request
def _never_cached(response):
    """Each answer is one user's view of the org (or a token shown once): no shared or browser
    cache may keep it, errors included."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _body(schema: type[Schema]) -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        data: Any = {}
    else:
        try:
            data = loads_json(raw)
        except ValueError:
            raise ApiError(
                400, "INVALID_JSON", "The body is not JSON.", {"_body": ["Not JSON."]}
            ) from None
    if not isinstance(data, dict):
        raise ApiError(
            400,
            "INVALID_JSON",
            "The body must be a JSON object.",
            {"_body": ["Must be a JSON object."]},
        )
    return _load(schema, data)


def _query(schema: type[Schema]) -> dict[str, Any]:
    return _load(schema, request.args.to_dict())


def _load(schema: type[Schema], data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema().load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_body": exc.messages}
        raise ApiError(400, "INVALID_REQUEST", "The request has invalid fields.", messages) from exc


def to_json(value: Any) -> Any:
    """Views are dataclasses: their field names are the JSON keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def _answer(value: Any, status: int = 200):
    return jsonify(to_json(value)), status


def _page(page: views.Page):
    return jsonify({"items": to_json(page.items), "next_cursor": page.next_cursor})


def _listing(items: list[Any]):
    return jsonify({"items": to_json(items)})


# --- me and the org -----------------------------------------------------------------------------
@bp.get("/me")
def me():
    return _answer(people.whoami(_store(), _actor()))


@bp.get("/org")
def get_org():
    return _answer(org.get_org(_store(), _actor()))


@bp.patch("/org")
def update_org():
    changes = _body(s.OrgSettingsSchema)
    return _answer(org.update_org(_store(), _actor(), changes))


@bp.get("/org/catalog")
def org_catalog():
    return _answer(org.org_catalog(_store(), _actor()))


# --- partners -----------------------------------------------------------------------------------
@bp.get("/partners")
def list_partners():
    return _listing(people.list_partners(_store(), _actor()))


@bp.post("/partners")
def create_partner():
    values = _body(s.PartnerSchema)
    return _answer(people.create_partner(_store(), _actor(), values), 201)


@bp.get("/partners/<id:partner_id>")
def get_partner(partner_id: str):
    return _answer(people.get_partner(_store(), _actor(), partner_id))


@bp.patch("/partners/<id:partner_id>")
def update_partner(partner_id: str):
    changes = _body(s.PartnerChangesSchema)
    return _answer(people.update_partner(_store(), _actor(), partner_id, changes))


# --- users and tokens ---------------------------------------------------------------------------
@bp.get("/users")
def list_users():
    query = _query(s.UserQuery)
    return _listing(people.list_users(_store(), _actor(), query.get("partner")))


@bp.post("/users")
def create_user():
    values = _body(s.UserSchema)
    return _answer(people.create_user(_store(), _actor(), values), 201)


@bp.get("/users/<id:user_id>")
def get_user(user_id: str):
    return _answer(people.get_user(_store(), _actor(), user_id))


@bp.patch("/users/<id:user_id>")
def update_user(user_id: str):
    changes = _body(s.UserChangesSchema)
    return _answer(people.update_user(_store(), _actor(), user_id, changes))


@bp.get("/users/<id:user_id>/tokens")
def list_tokens(user_id: str):
    return _listing(people.list_tokens(_store(), _actor(), user_id))


@bp.post("/users/<id:user_id>/tokens")
def create_token(user_id: str):
    values = _body(s.TokenSchema)
    token = people.create_token(_store(), _actor(), user_id, values["description"])
    return _answer(token, 201)  # the token is in this answer only (never cached: see above)


@bp.delete("/users/<id:user_id>/tokens/<id:token_id>")
def revoke_token(user_id: str, token_id: str):
    return _answer(people.revoke_token(_store(), _actor(), user_id, token_id))


# --- labels -------------------------------------------------------------------------------------
@bp.get("/labels")
def list_labels():
    return _listing(labels.list_labels(_store(), _actor()))


@bp.post("/labels")
def create_label():
    values = _body(s.LabelSchema)
    return _answer(labels.create_label(_store(), _actor(), values), 201)


@bp.get("/labels/<id:label_id>")
def get_label(label_id: str):
    return _answer(labels.get_label(_store(), _actor(), label_id))


@bp.patch("/labels/<id:label_id>")
def update_label(label_id: str):
    changes = _body(s.LabelChangesSchema)
    return _answer(labels.update_label(_store(), _actor(), label_id, changes))


@bp.delete("/labels/<id:label_id>")
def delete_label(label_id: str):
    labels.delete_label(_store(), _actor(), label_id)
    return "", 204


# --- messages -----------------------------------------------------------------------------------
@bp.get("/messages")
def list_messages():
    query = _query(s.MessageQuery)
    query["text"] = query.pop("q", None)
    return _page(inbox.list_messages(_store(), _actor(), **query))


@bp.get("/messages/counts")
def message_counts():
    query = _query(s.CountsQuery)
    return _answer(inbox.message_counts(_store(), _actor(), **query))


@bp.post("/messages/actions")
def act_on_messages():
    body = _body(s.BulkMessageActionSchema)
    messages = inbox.act_on_messages(
        _store(), _actor(), body["messages"], body["action"], body.get("label")
    )
    return _listing(messages)


@bp.get("/messages/<id:message_id>")
def get_message(message_id: str):
    return _answer(inbox.get_message(_store(), _actor(), message_id))


@bp.get("/messages/<id:message_id>/history")
def message_history(message_id: str):
    return _listing(inbox.message_history(_store(), _actor(), message_id))


@bp.post("/messages/<id:message_id>/actions")
def act_on_message(message_id: str):
    body = _body(s.MessageActionSchema)
    [message] = inbox.act_on_messages(
        _store(), _actor(), [message_id], body["action"], body.get("label")
    )
    return _answer(message)


@bp.post("/messages/<id:message_id>/reply")
def reply_to_message(message_id: str):
    body = _body(s.ReplySchema)
    return _answer(replies.reply_to_message(_store(), _actor(), message_id, body["text"]), 201)


@bp.post("/messages/<id:message_id>/lock")
def lock_message(message_id: str):
    return _answer(inbox.lock_message(_store(), _actor(), message_id))


@bp.delete("/messages/<id:message_id>/lock")
def unlock_message(message_id: str):
    return _answer(inbox.unlock_message(_store(), _actor(), message_id))


# --- cases --------------------------------------------------------------------------------------
@bp.get("/cases")
def list_cases():
    return _page(case_reads.list_cases(_store(), _actor(), **_query(s.CaseQuery)))


@bp.post("/cases")
def open_case():
    body = _body(s.OpenCaseSchema)
    case, created = cases.open_case(_store(), _actor(), **body)
    return _answer(case, 201 if created else 200)


@bp.get("/cases/<id:case_id>")
def get_case(case_id: str):
    return _answer(case_reads.get_case(_store(), _actor(), case_id))


@bp.get("/cases/<id:case_id>/timeline")
def case_timeline(case_id: str):
    query = _query(s.TimelineQuery)
    return _page(case_reads.case_timeline(_store(), _actor(), case_id, **query))


@bp.post("/cases/<id:case_id>/notes")
def add_note(case_id: str):
    body = _body(s.NoteSchema)
    return _answer(cases.add_note(_store(), _actor(), case_id, body["note"]), 201)


@bp.post("/cases/<id:case_id>/reassign")
def reassign_case(case_id: str):
    body = _body(s.ReassignSchema)
    return _answer(cases.reassign_case(_store(), _actor(), case_id, **body))


@bp.put("/cases/<id:case_id>/labels")
def set_case_labels(case_id: str):
    body = _body(s.CaseLabelsSchema)
    return _answer(cases.set_case_labels(_store(), _actor(), case_id, body["labels"]))


@bp.post("/cases/<id:case_id>/reply")
def reply_in_case(case_id: str):
    body = _body(s.ReplySchema)
    return _answer(cases.reply_in_case(_store(), _actor(), case_id, body["text"]), 201)


@bp.post("/cases/<id:case_id>/close")
def close_case(case_id: str):
    body = _body(s.NoteSchema)
    return _answer(cases.close_case(_store(), _actor(), case_id, body["note"]))


@bp.post("/cases/<id:case_id>/reopen")
def reopen_case(case_id: str):
    body = _body(s.ReopenSchema)
    return _answer(cases.reopen_case(_store(), _actor(), case_id, body.get("note")))


@bp.put("/cases/<id:case_id>/watch")
def watch_case(case_id: str):
    return _answer(cases.watch_case(_store(), _actor(), case_id, True))


@bp.delete("/cases/<id:case_id>/watch")
def unwatch_case(case_id: str):
    return _answer(cases.watch_case(_store(), _actor(), case_id, False))


# --- notifications ------------------------------------------------------------------------------
@bp.get("/notifications")
def list_notifications():
    query = _query(s.NotificationQuery)
    return _page(notifications.list_notifications(_store(), _actor(), **query))


@bp.post("/notifications/read")
def mark_all_notifications_read():
    marked = notifications.mark_all_notifications_read(_store(), _actor())
    return jsonify({"marked": marked})


@bp.post("/notifications/<id:notification_id>/read")
def mark_notification_read(notification_id: str):
    return _answer(notifications.mark_notification_read(_store(), _actor(), notification_id))


# --- the document --------------------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi_document():
    return jsonify(openapi.document())

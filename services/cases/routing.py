"""How the partner API's routes are declared and what every one of them shares: ``route``
(the declaration: method, path, what the OpenAPI document says, the schemas of the body and
query, the shape of the answer), the bearer-token check, loading bodies and queries, writing
answers, the id converter, and the mapping of the service layer's errors to statuses.

A view gets the body and query loaded (``body``, ``query``) and returns the answer's value; the
decorator writes it as one object, a list, a page or nothing. What is documented is what runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import date
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError
from werkzeug.routing import BaseConverter

from services.cases import openapi
from services.cases.domain import (
    Actor,
    CasesError,
    Conflict,
    Forbidden,
    Invalid,
    InvalidCursor,
    NotFound,
    Refused,
)
from services.cases.handlers import access
from shared.http import ApiError, error_response
from shared.text import loads_json
from shared.uow import ServiceStore

bp = Blueprint("cases", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = {"cases.openapi_document"}
OPERATIONS: list[openapi.Operation] = []  # every route's declaration, in order
ANY, ADMIN, WORKERS = openapi.ANY, openapi.ADMIN, openapi.WORKERS
TOKEN_OWNERS = "the user, administrators, their partner's managers"


class IdConverter(BaseConverter):
    """A path id: at most 64 characters, no NUL (which PostgreSQL cannot compare), and not one
    of the fixed words that stand beside ids (``/messages/actions``, ``/messages/counts``,
    ``/answers/import``): else
    ``GET /messages/actions`` would read a message called "actions", and the ``Allow`` header of
    ``/messages/actions`` would offer GET."""

    regex = r"(?!(?:actions|counts|import)(?![^/]))[^/\x00]{1,64}"


def cases_error(exc: CasesError):
    if isinstance(exc, NotFound):
        return error_response(404, f"{exc.kind.upper()}_NOT_FOUND", str(exc))
    if isinstance(exc, Forbidden):
        return error_response(403, "FORBIDDEN", str(exc))
    if isinstance(exc, Conflict):
        return error_response(409, exc.code, str(exc))
    if isinstance(exc, Invalid):
        return error_response(422, "INVALID_FIELDS", str(exc), exc.fields)
    if isinstance(exc, Refused):
        return error_response(400, exc.code, str(exc))
    raise exc


def cursor_error(exc: InvalidCursor):
    return error_response(400, "INVALID_CURSOR", str(exc), {"cursor": [str(exc)]})


# --- plumbing -----------------------------------------------------------------------------------
def store() -> ServiceStore:
    return current_app.extensions["upartners.store"]


def actor() -> Actor:
    return g.actor


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    actor = None
    if scheme.lower() == "bearer" and token.strip():
        actor = access.authenticate(store(), token.strip())
    if actor is None:
        raise ApiError(401, "UNAUTHORIZED", "Missing, invalid or revoked bearer token.")
    g.actor = actor


@bp.after_request
def _never_cached(response):
    """Each answer is one user's view of the org (or a token shown once): no shared or browser
    cache may keep it, errors included."""
    response.headers["Cache-Control"] = "no-store"
    return response


_PLAIN = (str, int, float, bool, type(None))


def to_json(value: Any) -> Any:
    """Views are dataclasses: their field names are the JSON keys. Runs for every value of
    every answer (37,000 times for agent activity over 500 users), so plain values go first
    and each dataclass's field names are looked up once."""
    if isinstance(value, _PLAIN):
        return value
    names = _field_names(type(value))
    if names is not None:
        return {name: to_json(getattr(value, name)) for name in names}
    if isinstance(value, date):  # and datetime
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


@functools.cache
def _field_names(kind: type) -> tuple[str, ...] | None:
    """A dataclass's field names; None for any other type."""
    if dataclasses.is_dataclass(kind):
        return tuple(f.name for f in dataclasses.fields(kind))
    return None


def _load_body(schema: type[Schema]) -> dict[str, Any]:
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


def _load(schema: type[Schema], data: dict[str, Any]) -> dict[str, Any]:
    try:
        return schema().load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_body": exc.messages}
        raise ApiError(400, "INVALID_REQUEST", "The request has invalid fields.", messages) from exc


def route(
    method: str,
    rule: str,
    summary: str,
    who: str = ANY,
    *,
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    answer: type | tuple[type, ...] | None = None,
    shape: str = "one",
    status: int = 200,
    also: tuple[int, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare and register a route of the blueprint. The view receives the path's values, and
    ``body`` / ``query`` loaded with their schemas; it returns the answer's value (or, where
    ``also`` names other statuses, ``(value, status)``; for ``shape="file"``, the response)."""
    operation = openapi.Operation(
        method,
        "/api/v1" + openapi.openapi_path(rule),
        summary,
        who,
        body=body,
        query=query,
        answer=answer,
        shape=shape,
        status=status,
        also=also,
    )

    def register(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def endpoint(**path: str) -> Any:
            loaded: dict[str, Any] = {}
            if body is not None:
                loaded["body"] = _load_body(body)
            if query is not None:
                loaded["query"] = _load(query, request.args.to_dict())
            value, answered = view(**path, **loaded), status
            if also and isinstance(value, tuple):
                value, answered = value
            return _write(value, shape), answered

        OPERATIONS.append(operation)
        bp.add_url_rule(rule, view.__name__, endpoint, methods=[method.upper()])
        return view

    return register


def _write(value: Any, shape: str) -> Any:
    if shape == "file":
        return value  # the view made the response (send_file)
    if shape == "none":
        return ""
    if shape == "list":
        return jsonify({"items": to_json(value)})
    if shape == "page":
        return jsonify({"items": to_json(value.items), "next_cursor": value.next_cursor})
    return jsonify(to_json(value))

"""The OpenAPI 3 document of the partner API, served at ``/api/v1/openapi.json``.

Operations are listed here once; request bodies and query parameters are derived from the
marshmallow schemas the API loads with, and answers from the view dataclasses the handlers
return, so the document cannot drift from the code on those. A test compares the operations
with the app's URL map both ways.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import Schema, fields, validate

from services.cases import schemas as s
from services.cases import views as v

ANY = "any user of the org"
ADMIN = "org administrators"
WORKERS = "administrators and the assigned partner's users"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI form: /api/v1/cases/{case_id}
    summary: str
    who: str = ANY
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    # A view dataclass, or a tuple of them where an answer takes one of several shapes.
    answer: type | tuple[type, ...] | None = None
    shape: str = "one"  # one, list, page, none, text
    status: int = 200


OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/api/v1/me", "The caller: user, role, partner, org.", answer=v.MeView),
    Operation("get", "/api/v1/org", "The org's settings.", answer=v.OrgView),
    Operation(
        "patch",
        "/api/v1/org",
        "Change settings; emits org.updated.",
        ADMIN,
        body=s.OrgSettingsSchema,
        answer=v.OrgView,
    ),
    Operation(
        "get",
        "/api/v1/org/catalog",
        "Groups and flows of the flow engine, by name.",
        ADMIN,
        answer=v.CatalogView,
    ),
    Operation(
        "get",
        "/api/v1/partners",
        "Partners (others' as a directory of id and name for non-administrators).",
        answer=(v.PartnerView, v.Ref),
        shape="list",
    ),
    Operation(
        "post",
        "/api/v1/partners",
        "Add a partner.",
        ADMIN,
        body=s.PartnerSchema,
        answer=v.PartnerView,
        status=201,
    ),
    Operation(
        "get",
        "/api/v1/partners/{partner_id}",
        "One partner (administrators, or its own users).",
        answer=v.PartnerView,
    ),
    Operation(
        "patch",
        "/api/v1/partners/{partner_id}",
        "Change a partner, its restriction and labels.",
        ADMIN,
        body=s.PartnerChangesSchema,
        answer=v.PartnerView,
    ),
    Operation(
        "get",
        "/api/v1/users",
        "Users the caller may see.",
        query=s.UserQuery,
        answer=v.UserView,
        shape="list",
    ),
    Operation(
        "post",
        "/api/v1/users",
        "Add a user.",
        "administrators; managers for their partner",
        body=s.UserSchema,
        answer=v.UserView,
        status=201,
    ),
    Operation("get", "/api/v1/users/{user_id}", "One user.", answer=v.UserView),
    Operation(
        "patch",
        "/api/v1/users/{user_id}",
        "Rename, change role, deactivate.",
        "administrators; managers for their partner; anyone renames themselves",
        body=s.UserChangesSchema,
        answer=v.UserView,
    ),
    Operation(
        "get",
        "/api/v1/users/{user_id}/tokens",
        "A user's tokens (never the secret).",
        "the user, administrators, their partner's managers",
        answer=v.TokenView,
        shape="list",
    ),
    Operation(
        "post",
        "/api/v1/users/{user_id}/tokens",
        "Create a token; shown this once.",
        "the user, administrators, their partner's managers",
        body=s.TokenSchema,
        answer=v.NewToken,
        status=201,
    ),
    Operation(
        "delete",
        "/api/v1/users/{user_id}/tokens/{token_id}",
        "Revoke a token.",
        "the user, administrators, their partner's managers",
        answer=v.TokenView,
    ),
    Operation("get", "/api/v1/labels", "Labels the caller sees.", answer=v.LabelView, shape="list"),
    Operation(
        "post",
        "/api/v1/labels",
        "Add a label; emits label.created.",
        ADMIN,
        body=s.LabelSchema,
        answer=v.LabelView,
        status=201,
    ),
    Operation("get", "/api/v1/labels/{label_id}", "One label.", answer=v.LabelView),
    Operation(
        "patch",
        "/api/v1/labels/{label_id}",
        "Change a label; emits label.updated.",
        ADMIN,
        body=s.LabelChangesSchema,
        answer=v.LabelView,
    ),
    Operation(
        "delete",
        "/api/v1/labels/{label_id}",
        "Delete a label; emits label.deleted.",
        ADMIN,
        shape="none",
        status=204,
    ),
    Operation(
        "get",
        "/api/v1/messages",
        "One page of a folder (inbox, flagged, archived, unlabelled, sent), newest first; "
        "the sent folder holds replies.",
        query=s.MessageQuery,
        answer=(v.MessageView, v.OutgoingView),
        shape="page",
    ),
    Operation(
        "get",
        "/api/v1/messages/counts",
        "Messages per folder and inbox messages per label.",
        query=s.CountsQuery,
        answer=v.Counts,
    ),
    Operation(
        "post",
        "/api/v1/messages/actions",
        "One action on many messages, all or none.",
        body=s.BulkMessageActionSchema,
        answer=v.MessageView,
        shape="list",
    ),
    Operation("get", "/api/v1/messages/{message_id}", "One message.", answer=v.MessageView),
    Operation(
        "get",
        "/api/v1/messages/{message_id}/history",
        "Who did what to the message.",
        answer=v.HistoryEntry,
        shape="list",
    ),
    Operation(
        "post",
        "/api/v1/messages/{message_id}/actions",
        "Label, unlabel, flag, unflag, archive or restore.",
        body=s.MessageActionSchema,
        answer=v.MessageView,
    ),
    Operation(
        "post",
        "/api/v1/messages/{message_id}/reply",
        "Answer the contact; archives the message; emits outgoing.requested.",
        body=s.ReplySchema,
        answer=v.OutgoingView,
        status=201,
    ),
    Operation(
        "post",
        "/api/v1/messages/{message_id}/lock",
        "Take the soft lock for a few minutes.",
        answer=v.MessageView,
    ),
    Operation(
        "delete",
        "/api/v1/messages/{message_id}/lock",
        "Release one's soft lock.",
        answer=v.MessageView,
    ),
    Operation(
        "get",
        "/api/v1/cases",
        "Cases the caller sees, newest first.",
        query=s.CaseQuery,
        answer=v.CaseView,
        shape="page",
    ),
    Operation(
        "post",
        "/api/v1/cases",
        "Open a case (201), or get the contact's open one (200); emits case.opened.",
        body=s.OpenCaseSchema,
        answer=v.CaseView,
        status=201,
    ),
    Operation("get", "/api/v1/cases/{case_id}", "One case.", answer=v.CaseView),
    Operation(
        "get",
        "/api/v1/cases/{case_id}/timeline",
        "Messages and actions, oldest first.",
        query=s.TimelineQuery,
        answer=v.TimelineEntry,
        shape="page",
    ),
    Operation(
        "post",
        "/api/v1/cases/{case_id}/notes",
        "Add a note; emits case.note_added.",
        WORKERS,
        body=s.NoteSchema,
        answer=v.CaseView,
        status=201,
    ),
    Operation(
        "post",
        "/api/v1/cases/{case_id}/reassign",
        "Reassign; emits case.reassigned.",
        WORKERS,
        body=s.ReassignSchema,
        answer=v.CaseView,
    ),
    Operation(
        "put",
        "/api/v1/cases/{case_id}/labels",
        "Set the labels; emits case.labels_changed.",
        WORKERS,
        body=s.CaseLabelsSchema,
        answer=v.CaseView,
    ),
    Operation(
        "post",
        "/api/v1/cases/{case_id}/reply",
        "Message the contact; emits outgoing.requested.",
        WORKERS,
        body=s.ReplySchema,
        answer=v.OutgoingView,
        status=201,
    ),
    Operation(
        "post",
        "/api/v1/cases/{case_id}/close",
        "Close with a final note; emits case.closed.",
        WORKERS,
        body=s.NoteSchema,
        answer=v.CaseView,
    ),
    Operation(
        "post",
        "/api/v1/cases/{case_id}/reopen",
        "Reopen; emits case.reopened.",
        WORKERS,
        body=s.ReopenSchema,
        answer=v.CaseView,
    ),
    Operation(
        "put", "/api/v1/cases/{case_id}/watch", "Watch: get notifications.", answer=v.CaseView
    ),
    Operation("delete", "/api/v1/cases/{case_id}/watch", "Stop watching.", answer=v.CaseView),
    Operation(
        "get",
        "/api/v1/notifications",
        "The caller's notifications, newest first.",
        query=s.NotificationQuery,
        answer=v.NotificationView,
        shape="page",
    ),
    Operation("post", "/api/v1/notifications/read", "Mark all of one's notifications read."),
    Operation(
        "post",
        "/api/v1/notifications/{notification_id}/read",
        "Mark one read.",
        answer=v.NotificationView,
    ),
    Operation("get", "/api/v1/openapi.json", "This document (no token needed).", "anyone"),
    Operation("get", "/healthz", "The process is alive.", "anyone"),
    Operation("get", "/readyz", "The process can reach its database.", "anyone"),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics: on the process's ops port (UPARTNERS_OPS_PORT) only, 404 elsewhere.",
        "anyone",
        shape="text",
    ),
)

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "example": "CASE_NOT_FOUND"},
        "message": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": True},
    },
}


@functools.cache
def document() -> dict[str, Any]:
    components: dict[str, Any] = {"Error": ERROR}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "U-Partners cases: the partner API",
            "version": "1",
            "description": "Partners read and answer contacts' messages anonymously. Send "
            "`Authorization: Bearer <token>`. An object the caller may not see answers 404.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(op.path)
    ]
    if op.query is not None:
        for name, field in op.query().fields.items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": field.required,
                    "schema": field_schema(field),
                }
            )
    answer: dict[str, Any]
    if op.shape == "none":
        answer = {"description": "Done."}
    elif op.shape == "text":
        answer = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    else:
        answer = {
            "description": "OK",
            "content": {"application/json": {"schema": _answer_schema(op, components)}},
        }
    responses: dict[str, Any] = {str(op.status): answer}
    if op.path == "/api/v1/cases":
        responses["200"] = {
            "description": "The contact's case was already open.",
            "content": answer["content"],
        }
    errors = [
        ("400", "Invalid body or query."),
        ("401", "No valid token."),
        ("403", "Role not allowed."),
        ("404", "Not found or not visible."),
        ("405", "Method not allowed on this path; the Allow header lists those that are."),
        ("409", "State conflict."),
        ("422", "Fields naming unknown things."),
        ("503", "The database is unavailable: try again (Retry-After)."),
    ]
    if op.method in ("post", "put", "patch"):
        errors.append(("413", "The body is over 1 MiB."))
    for status, why in sorted(errors):
        responses[status] = {
            "description": why,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    result: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{op.method}{op.path}").strip("_"),
        "summary": op.summary,
        "description": f"Who: {op.who}.",
        "parameters": parameters,
        "responses": responses,
    }
    if op.who == "anyone":
        result["security"] = []
    if op.body is not None:
        body = body_schema(op.body)
        # An empty body reads as {}: it is required only where a field is.
        result["requestBody"] = {
            "required": bool(body.get("required") or body.get("minProperties")),
            "content": {"application/json": {"schema": body}},
        }
    return result


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _answer_schema(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    if op.answer is None:
        return {"type": "object"}
    if isinstance(op.answer, tuple):
        ref = {"anyOf": [view_schema(view, components) for view in op.answer]}
    else:
        ref = view_schema(op.answer, components)
    if op.shape == "list":
        return {"type": "object", "properties": {"items": {"type": "array", "items": ref}}}
    if op.shape == "page":
        return {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": ref},
                "next_cursor": {"type": "string", "nullable": True},
            },
        }
    return ref


# --- marshmallow -> JSON Schema -----------------------------------------------------------------
def body_schema(schema: type[Schema]) -> dict[str, Any]:
    instance = schema()
    properties = {name: field_schema(f) for name, f in instance.fields.items()}
    required = [name for name, f in instance.fields.items() if f.required]
    result: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        result["required"] = required
    if minimum := getattr(schema, "min_properties", 0):
        result["minProperties"] = minimum
    return result


def field_schema(field: fields.Field) -> dict[str, Any]:
    result: dict[str, Any]
    if isinstance(field, fields.Boolean):
        result = {"type": "boolean"}
    elif isinstance(field, fields.Integer):
        result = {"type": "integer"}
    elif isinstance(field, fields.DateTime):
        result = {"type": "string", "format": "date-time"}
    elif isinstance(field, fields.Email):
        result = {"type": "string", "format": "email"}
    elif isinstance(field, fields.List):
        result = {"type": "array", "items": field_schema(field.inner)}
    elif isinstance(field, fields.Dict):
        result = {"type": "object"}
    else:
        result = {"type": "string"}
    for rule in _validators(field):
        if isinstance(rule, validate.Length):
            low, high = (
                ("minItems", "maxItems")
                if result["type"] == "array"
                else ("minLength", "maxLength")
            )
            if rule.min is not None:
                result[low] = rule.min
            if rule.max is not None:
                result[high] = rule.max
        elif isinstance(rule, validate.Range):
            if rule.min is not None:
                result["minimum"] = rule.min
            if rule.max is not None:
                result["maximum"] = rule.max
        elif isinstance(rule, validate.OneOf):
            result["enum"] = list(rule.choices)
    if field.allow_none:
        result["nullable"] = True
    return result


def _validators(field: fields.Field) -> list[Any]:
    return list(field.validators)


# --- view dataclasses -> JSON Schema ------------------------------------------------------------
def view_schema(view: type, components: dict[str, Any]) -> dict[str, Any]:
    name = view.__name__
    if name not in components:
        components[name] = {}  # placeholder: views may refer to each other
        hints = typing.get_type_hints(view, vars(v))
        components[name] = {
            "type": "object",
            "properties": {
                f.name: _type_schema(hints[f.name], components) for f in dataclasses.fields(view)
            },
            "required": [f.name for f in dataclasses.fields(view)],
        }
    return {"$ref": f"#/components/schemas/{name}"}


def _type_schema(hint: Any, components: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        schema = _type_schema(inner[0], components)
        if "$ref" in schema:
            return {"allOf": [schema], "nullable": True}
        return {**schema, "nullable": True}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0], components)}
    if origin is dict:
        return {"type": "object", "additionalProperties": True}
    if dataclasses.is_dataclass(hint):
        return view_schema(hint, components)
    simple = {
        str: {"type": "string"},
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        datetime: {"type": "string", "format": "date-time"},
    }
    return dict(simple.get(hint, {}))

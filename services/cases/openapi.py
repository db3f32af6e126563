"""The OpenAPI 3 document of the partner API, served at ``/api/v1/openapi.json``, derived from what
the routes declare.

Every route of services/cases/api.py is registered by ``api.route``, which records an
``Operation``: its request body and query (the marshmallow schemas the route loads with; apispec
turns them into JSON Schema), its answer (the view dataclasses of services/cases/views.py, in the
shape the route answers: one, a list, a page) and its status. A route cannot exist without its
operation, and its body, query and answer are the ones it really uses, so the document cannot
drift from the code. ``PROBES`` declares what other blueprints serve (/healthz, /readyz, /metrics).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from services.cases import views as v

ANY = "any user of the org"
ADMIN = "org administrators"
WORKERS = "administrators and the assigned partner's users"
ANYONE = "anyone"
FILE_TYPES = (  # what a file answer may be: services/cases/export_files.py writes them
    "text/csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)


@dataclass(frozen=True)
class Operation:
    method: str  # get, post, ...
    path: str  # OpenAPI form: /api/v1/cases/{case_id}
    summary: str
    who: str = ANY
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    # A view dataclass, or a tuple of them where an answer takes one of several shapes.
    answer: type | tuple[type, ...] | None = None
    shape: str = "one"  # one, list, page, none (204), text, document, file (an export's)
    status: int = 200
    also: tuple[int, ...] = ()  # other success statuses with the same answer


PROBES: tuple[Operation, ...] = (
    Operation("get", "/healthz", "The process is alive.", ANYONE, answer=v.Status),
    Operation("get", "/readyz", "The process can reach its database.", ANYONE, answer=v.Status),
    Operation(
        "get",
        "/metrics",
        "Prometheus metrics: on the process's ops port (UPARTNERS_OPS_PORT) only, 404 elsewhere.",
        ANYONE,
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

ERRORS = (
    ("400", "Invalid body or query."),
    ("401", "No valid token."),
    ("403", "Role not allowed."),
    ("404", "Not found or not visible."),
    ("405", "Method not allowed on this path; the Allow header lists those that are."),
    ("409", "State conflict."),
    ("422", "Fields naming unknown things."),
    ("503", "The database is unavailable: try again (Retry-After)."),
)


def openapi_path(rule: str) -> str:
    """A werkzeug rule in OpenAPI's form: ``/cases/<id:case_id>`` -> ``/cases/{case_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


@functools.cache
def document(operations: tuple[Operation, ...]) -> dict[str, Any]:
    marshmallow = MarshmallowPlugin(schema_name_resolver=lambda _schema: None)  # bodies inline
    spec = APISpec(
        title="U-Partners cases: the partner API",
        version="1",
        openapi_version="3.0.3",
        plugins=[marshmallow],
        info={
            "description": "Partners read and answer contacts' messages anonymously. Send "
            "`Authorization: Bearer <token>`. An object the caller may not see answers 404."
        },
        security=[{"bearer": []}],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    components: dict[str, Any] = {"Error": ERROR}
    converter = marshmallow.converter
    assert converter is not None
    paths: dict[str, dict[str, Any]] = {}
    for op in (*operations, *PROBES):
        paths.setdefault(op.path, {})[op.method] = _operation(op, components, converter)
    for name, schema in components.items():
        spec.components.schema(name, schema)
    for path, methods in paths.items():
        spec.path(path=path, operations=methods)
    return spec.to_dict()


def _operation(op: Operation, components: dict[str, Any], converter: Any) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{([^}]+)}", op.path)
    ]
    if op.query is not None:
        parameters += converter.schema2parameters(op.query, location="query")
    success = _success(op, components)
    responses: dict[str, Any] = {str(status): success for status in (op.status, *op.also)}
    errors = list(ERRORS)
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
    if op.who == ANYONE:
        result["security"] = []
    if op.body is not None:
        body = converter.schema2jsonschema(op.body)
        if minimum := getattr(op.body, "min_properties", 0):
            body["minProperties"] = minimum
        # An empty body reads as {}: it is required only where a field is.
        result["requestBody"] = {
            "required": bool(body.get("required") or body.get("minProperties")),
            "content": {"application/json": {"schema": body}},
        }
    return result


def _success(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    if op.shape == "none":
        return {"description": "Done."}
    if op.shape == "text":
        return {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    if op.shape == "file":
        binary = {"schema": {"type": "string", "format": "binary"}}
        return {
            "description": "The file, as an attachment (Content-Disposition names it).",
            "content": {content_type: binary for content_type in FILE_TYPES},
        }
    if op.shape == "document" or op.answer is None:
        schema: dict[str, Any] = {"type": "object"}
    else:
        views = op.answer if isinstance(op.answer, tuple) else (op.answer,)
        refs = [view_schema(view, components) for view in views]
        one = refs[0] if len(refs) == 1 else {"anyOf": refs}
        items = {"type": "array", "items": one}
        schema = {
            "one": one,
            "list": {"type": "object", "required": ["items"], "properties": {"items": items}},
            "page": {
                "type": "object",
                "required": ["items", "next_cursor"],
                "properties": {"items": items, "next_cursor": {"type": "string", "nullable": True}},
            },
        }[op.shape]
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


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
        float: {"type": "number"},
        datetime: {"type": "string", "format": "date-time"},
        date: {"type": "string", "format": "date"},
    }
    return dict(simple.get(hint, {}))

"""HTTP only: the partner API's export routes (declared like every route, with
services/cases/routing.py's ``route``; services/cases/api.py imports this module to register
them). An export is its requester's alone: anyone else gets 404, as for any object they may not
see."""

from __future__ import annotations

from flask import current_app, send_file

from services.cases import schemas as s
from services.cases import views as v
from services.cases.handlers import exports
from services.cases.handlers.export_kinds import ExportSchema
from services.cases.routing import actor, route, store


@route(
    "post",
    "/exports",
    "Ask for an export of messages, cases or replies (XLSX or CSV) with the filters of their "
    "listing; emits export.requested. The worker builds the file, then notifies the caller.",
    body=ExportSchema,
    answer=v.ExportView,
    status=202,
)
def request_export(body):
    return exports.request_export(
        store(), actor(), body["kind"], body["format"], body.get("filters", {})
    )


@route(
    "get",
    "/exports",
    "The caller's own exports, newest first.",
    query=s.ExportQuery,
    answer=v.ExportView,
    shape="page",
)
def list_exports(query):
    return exports.list_exports(store(), actor(), **query)


@route(
    "get",
    "/exports/<id:export_id>",
    "One of the caller's exports: its state and progress.",
    "the user who asked for it",
    answer=v.ExportView,
)
def get_export(export_id: str):
    return exports.get_export(store(), actor(), export_id)


@route(
    "get",
    "/exports/<id:export_id>/file",
    "Download a done export (409 while it is not ready, or once it expired).",
    "the user who asked for it",
    shape="file",
)
def download_export(export_id: str):
    settings = current_app.config["UPARTNERS_SETTINGS"]
    path, name, content_type = exports.export_file(store(), settings, actor(), export_id)
    return send_file(path, mimetype=content_type, as_attachment=True, download_name=name)

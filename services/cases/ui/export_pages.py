"""The export pages: asking for an export from the inbox (the folder and its search) or the case
list (its state), the list of the user's exports (refreshing itself while one is being built),
and downloading a done one. They call the same service layer as ``/api/v1/exports``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, flash, g, redirect, request, send_file, url_for
from marshmallow import ValidationError

from services.cases.domain import Conflict, Forbidden, InvalidCursor
from services.cases.export_files import FORMATS
from services.cases.handlers import export_kinds, exports, org
from services.cases.ui import i18n
from services.cases.ui.pages import _, page, protect, store

bp = Blueprint("ui_exports", __name__)
protect(bp)  # signed-in users only, CSRF, private headers: as every page

# The form fields each kind takes from the page that asks (the rest are ignored).
FIELDS = {
    "messages": ("folder", "q", "label", "contact"),
    "replies": ("q", "contact", "partner"),
    "cases": ("state",),
    "daily": ("scope", "id", "from", "to"),  # whole days, as the statistics take them
    "activity": ("from", "to", "partner"),
}


def register(app: Flask) -> None:
    app.register_blueprint(bp)


def kind_names() -> dict[str, str]:
    return {
        "messages": _("Messages"),
        "cases": _("Cases"),
        "replies": _("Replies"),
        "daily": _("Daily counts"),
        "activity": _("Agent activity"),
    }


def state_names() -> dict[str, str]:
    return {
        "queued": _("Waiting"),
        "running": _("Being built"),
        "done": _("Ready"),
        "failed": _("Failed"),
        "expired": _("Expired"),
    }


def _when():
    timezone = org.get_org(store(), g.signed_in.actor).timezone
    return lambda moment: i18n.when(moment, g.language, timezone)


@bp.get("/exports")
def export_list():
    try:
        listing = exports.list_exports(
            store(), g.signed_in.actor, cursor=request.args.get("cursor") or None
        )
    except InvalidCursor:
        return redirect(url_for("ui_exports.export_list"))
    return page(
        "exports.html",
        items=listing.items,
        next_cursor=listing.next_cursor,
        building=any(item.state in exports.UNFINISHED for item in listing.items),
        kinds=kind_names(),
        states=state_names(),
        when=_when(),
    )


def _filters(kind: str) -> dict[str, Any]:
    """The kind's filters from the form: the page's search, and its days in the org's zone."""
    filters = {k: v for k in FIELDS[kind] if (v := request.form.get(k, "").strip())}
    if kind in ("messages", "replies"):
        timezone = org.get_org(store(), g.signed_in.actor).timezone
        days = [request.form.get(k, "")[:10] for k in ("from", "to")]
        after, before = i18n.day_range(days[0], days[1], timezone)
        filters |= {k: v.isoformat() for k, v in (("after", after), ("before", before)) if v}
    return filters


@bp.post("/exports")
def request_export():
    kind, file_format = request.form.get("kind", ""), request.form.get("format", "")
    if kind not in export_kinds.KINDS or file_format not in FORMATS:
        flash(_("That could not be done."), "error")
        return redirect(url_for("ui_exports.export_list"))
    try:
        filters = export_kinds.stored_filters(kind, _filters(kind))
        exports.request_export(store(), g.signed_in.actor, kind, file_format, filters)
    except (ValidationError, Forbidden):
        flash(_("That could not be done."), "error")
    except Conflict:
        flash(_("Wait until your exports being built are ready."), "error")
    else:
        flash(_("Export requested: it is being built."), "done")
    return redirect(url_for("ui_exports.export_list"))


@bp.get("/exports/<export_id>/file")
def download(export_id: str):
    settings = current_app.config["UPARTNERS_SETTINGS"]
    try:
        path, name, content_type = exports.export_file(
            store(), settings, g.signed_in.actor, export_id[:64]
        )
    except Conflict:
        flash(_("This export cannot be downloaded."), "error")
        return redirect(url_for("ui_exports.export_list"))
    return send_file(path, mimetype=content_type, as_attachment=True, download_name=name)

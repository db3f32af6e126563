"""The pages, at ``/``: signing in (and out), setting a password from a one-time link, and the
inbox. Pages call the same service layer as ``/api/v1`` with the signed-in user as the actor, so
a page can show or do nothing the API would refuse that user."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from marshmallow import ValidationError
from werkzeug.exceptions import NotFound as NoSuchPage

from services.cases.domain import (
    CasesError,
    Conflict,
    Forbidden,
    Invalid,
    InvalidCursor,
    NotFound,
    Refused,
    TooManyAttempts,
)
from services.cases.handlers import case_reads, inbox, labels, org, replies, sign_in
from services.cases.schemas import MessageQuery
from services.cases.ui import i18n, session
from shared.db import utcnow
from shared.http import error_response, unexpected_error
from shared.uow import ServiceStore

log = logging.getLogger(__name__)
T = TypeVar("T")

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)
OPEN_PAGES = {"ui.sign_in", "ui.set_password", "ui.static"}  # the rest need a signed-in user


def register(app: Flask) -> None:
    """Wire the pages into the cases app: sessions, the languages, the blueprint."""
    session.configure(app, app.config["UPARTNERS_SETTINGS"])
    catalogues = i18n.load_catalogues()
    app.extensions["upartners.catalogues"] = catalogues
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda text: _translations().gettext(text),
        ngettext=lambda one, many, n: _translations().ngettext(one, many, n),
        newstyle=True,
    )
    app.register_blueprint(bp)
    app.register_error_handler(NoSuchPage, _page_not_found)
    app.register_error_handler(Exception, _page_failed)


def protect(blueprint: Blueprint) -> None:
    """What every page of a blueprint gets: the language, sign-in required (but for the open
    pages), CSRF on state-changing requests, private-page headers, and the Not found page for
    what the user may not see."""
    blueprint.before_request(_prepare)
    blueprint.after_request(_private)
    blueprint.register_error_handler(NotFound, _not_visible)


def _translations():
    return current_app.extensions["upartners.catalogues"][g.get("language", "en")]


def ngettext(one: str, many: str, count: int) -> str:
    return _translations().ngettext(one, many, count) % {"num": count}


def _(text: str, **values: Any) -> str:
    """Translate a string of the Python side (form errors, titles)."""
    translated = _translations().gettext(text)
    return translated % values if values else translated


def store() -> ServiceStore:
    return current_app.extensions["upartners.store"]


def _prepare_language() -> None:
    signed_in = session.current(store())
    g.language = i18n.choose(
        signed_in.language if signed_in else None, request.headers.get("Accept-Language")
    )


def _prepare():
    _prepare_language()
    signed_in = g.signed_in
    if not session.csrf_ok():
        return page("error.html", 403, title=_("This form has expired"), reason="csrf")
    if signed_in is None and request.endpoint not in OPEN_PAGES:
        return redirect(url_for("ui.sign_in", next=request.full_path.rstrip("?")))
    return None


def _private(response):
    response.headers.setdefault("Cache-Control", "no-store")  # pages show one user's view
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint == "ui.set_password":
        response.headers["Referrer-Policy"] = "no-referrer"  # the link's token is in the path
    return response


def _not_visible(_exc: NotFound):
    """An object the user may not see is not there, as in the API (whose answer is JSON)."""
    return page("error.html", 404, title=_("Not found"), reason="missing")


protect(bp)


@bp.app_context_processor
def _page_globals() -> dict[str, Any]:
    language = g.get("language", "en")
    return {
        "language": language,
        "html_lang": i18n.html_lang(language),
        "direction": i18n.direction(language),
        "csrf_token": session.csrf_token,
        "signed_in": g.get("signed_in"),
    }


def page(template: str, status: int = 200, **values: Any):
    return render_template(template, **values), status


# --- signing in ---------------------------------------------------------------------------------
@bp.get("/")
def home():
    return redirect(url_for("ui.inbox_page"))


@bp.route("/sign-in", methods=["GET", "POST"], endpoint="sign_in")
def sign_in_page():
    error = None
    email = ""
    if request.method == "POST":
        email = request.form.get("email", "")[:254]
        password = request.form.get("password", "")[:500]
        try:
            signed_in = sign_in.sign_in(store(), email, password, request.remote_addr or "")
        except TooManyAttempts as exc:
            minutes = max(1, round(exc.retry_after / 60))
            error = _(
                "Too many failed attempts. Try again in %(minutes)s minutes.", minutes=minutes
            )
            return page("sign_in.html", 429, email=email, error=error)
        if signed_in is None:
            error = _("That email and password do not match an active account.")
            return page("sign_in.html", 401, email=email, error=error)
        session.begin(signed_in)
        return redirect(safe_next(request.args.get("next")))
    return page("sign_in.html", email=email, error=error)


def safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("ui.inbox_page")


@bp.post("/sign-out")
def sign_out():
    session.end()
    return redirect(url_for("ui.sign_in"))


@bp.route("/set-password/<token>", methods=["GET", "POST"])
def set_password(token: str):
    holder = sign_in.link_holder(store(), token[:100])
    if holder is None:
        return page("error.html", 404, title=_("This link is no longer valid"), reason="link")
    name, email = holder
    error = None
    if request.method == "POST":
        password = request.form.get("password", "")
        if password != request.form.get("confirm", ""):
            error = _("The two passwords differ.")
        else:
            try:
                signed_in = sign_in.set_password(store(), token[:100], password)
            except Invalid as exc:
                error = _(exc.fields["password"][0])
            else:
                if signed_in is not None:
                    session.begin(signed_in)
                    return redirect(url_for("ui.inbox_page"))
                return page(
                    "error.html", 404, title=_("This link is no longer valid"), reason="link"
                )
    return page("set_password.html", 400 if error else 200, name=name, email=email, error=error)


# --- the inbox ----------------------------------------------------------------------------------
FOLDERS = ("inbox", "flagged", "archived", "unlabelled", "sent")


def folder_names() -> dict[str, str]:
    return {
        "inbox": _("Inbox"),
        "flagged": _("Flagged"),
        "archived": _("Archived"),
        "unlabelled": _("Unlabelled"),
        "sent": _("Sent"),
    }


SEARCH_FIELDS = ("q", "label", "contact", "cursor")


@bp.get("/inbox", defaults={"folder": "inbox"})
@bp.get("/inbox/<folder>")
def inbox_page(folder: str):
    actor = g.signed_in.actor
    if folder not in FOLDERS or (folder == "unlabelled" and not actor.is_admin):
        return page("error.html", 404, title=_("Not found"), reason="missing")
    try:
        query = MessageQuery().load(
            {k: v for k, v in request.args.items() if k in SEARCH_FIELDS and v}
        )
    except ValidationError:
        query = {}
    db = store()
    timezone = org.get_org(db, actor).timezone
    days = {k: request.args.get(k, "")[:10] for k in ("from", "to")}
    after, before = i18n.day_range(days["from"], days["to"], timezone)
    try:
        listing = inbox.list_messages(
            db,
            actor,
            folder=folder,
            text=query.get("q"),
            label=query.get("label"),
            contact=query.get("contact"),
            after=after,
            before=before,
            cursor=query.get("cursor"),
            limit=50,
        )
    except (CasesError, InvalidCursor):
        return redirect(url_for("ui.inbox_page", folder=folder))
    counts = inbox.message_counts(db, actor)
    visible_labels = labels.list_labels(db, actor)
    names = folder_names()
    search = {k: v for k, v in request.args.items() if k in (*SEARCH_FIELDS, "from", "to") and v}
    search.pop("cursor", None)
    return page(
        "inbox.html",
        folder=folder,
        folder_title=names[folder],
        folder_count=counts.folders.get(folder, 0),
        folders=[
            (name, title, counts.folders[name])
            for name, title in names.items()
            if name in counts.folders
        ],
        label_counts=[(label, counts.labels.get(label.id, 0)) for label in visible_labels],
        case_counts=case_reads.case_counts(db, actor),
        labels=visible_labels,
        messages=listing.items,
        next_cursor=listing.next_cursor,
        newest=max((m.received_at for m in listing.items if folder != "sent"), default=utcnow()),
        query=query,
        days=days,
        search=search,
        filtered=bool(search),
        here=request.full_path.rstrip("?"),
        me=actor.user_id,
        now=utcnow(),
        when=lambda moment: i18n.when(moment, g.language, timezone),
    )


@bp.get("/messages/<message_id>/history")
def message_history(message_id: str):
    """What happened to one message: labelled, flagged, archived, replied to, put in a case."""
    db = store()
    actor = g.signed_in.actor
    message = inbox.get_message(db, actor, message_id[:64])
    timezone = org.get_org(db, actor).timezone
    return page(
        "message_history.html",
        message=message,
        entries=inbox.message_history(db, actor, message.id),
        back=safe_next(request.args.get("back")),
        when=lambda moment: i18n.when(moment, g.language, timezone),
    )


@bp.get("/live/inbox/<folder>")
def new_in_folder(folder: str):
    """How many messages arrived in a folder after the newest the page shows (live.js asks every
    few seconds and shows a banner; the page itself, its selection and scroll stay)."""
    actor = g.signed_in.actor
    if folder not in FOLDERS or folder == "sent":
        abort(404)
    try:
        after = datetime.fromisoformat(request.args.get("after", ""))
    except ValueError:
        abort(404)
    if after.tzinfo is None:
        abort(404)
    listing = inbox.list_messages(store(), actor, folder=folder, after=after, limit=100)
    count = len(listing.items)
    label = ngettext("%(num)d new message", "%(num)d new messages", count) if count else ""
    return jsonify({"new": count, "label": label})


ACTIONS = ("flag", "unflag", "archive", "restore", "label", "unlabel")


@bp.post("/messages/<message_id>/act")
def act_on_message(message_id: str):
    action = request.form.get("action", "")
    if action not in ACTIONS:
        return page("error.html", 400, title=_("Not found"), reason="missing")
    label = request.form.get("label") or None
    do(lambda: inbox.act_on_messages(store(), g.signed_in.actor, [message_id[:64]], action, label))
    return redirect(safe_next(request.form.get("back")))


@bp.post("/messages/act")
def act_on_selected():
    """The bulk bar: one action on every message ticked on the page, all or none."""
    action = request.form.get("action", "")
    chosen = [m[:64] for m in request.form.getlist("messages")][:500]
    label = request.form.get("label") or None
    if action not in ACTIONS:
        return page("error.html", 400, title=_("Not found"), reason="missing")
    if not chosen:
        flash(_("Select one or more messages first."), "error")
    elif action in ("label", "unlabel") and label is None:
        flash(_("Choose a label first."), "error")
    elif do(lambda: inbox.act_on_messages(store(), g.signed_in.actor, chosen, action, label)):
        count = len(chosen)
        flash(ngettext("%(num)d message changed.", "%(num)d messages changed.", count), "done")
    return redirect(safe_next(request.form.get("back")))


@bp.post("/messages/<message_id>/reply")
def reply_to_message(message_id: str):
    actor, message_id = g.signed_in.actor, message_id[:64]
    text = request.form.get("text", "").strip()
    answer = request.form.get("answer", "").strip()[:64] or None  # the answer it started from
    back = safe_next(request.form.get("back"))
    if not text:
        flash(_("Write the reply first."), "error")
        return redirect(back)
    try:
        sent = do(lambda: replies.reply_to_message(store(), actor, message_id, text[:4096], answer))
    except Refused:  # the org requires a ready-made answer: the reply stays, on its own page
        return page(
            "reply.html",
            400,
            message=inbox.get_message(store(), actor, message_id),
            text=text[:4096],
            answer=None,
            error=answer_required(),
            back=back,
        )
    if sent is not None:
        flash(_("Reply queued: the flow engine sends it to the contact."), "done")
    return redirect(back)


def answer_required() -> str:
    return _("Start from a ready-made answer: search them above, insert one, then edit it.")


def do(command: Callable[[], T]) -> T | None:
    """Run a command of the service layer for a page: its answer, or None when it was refused
    (the reason becomes a message on the next page, never a stack trace). What the user may not
    see is the Not found page (``_not_visible``). Every command run this way answers a value."""
    try:
        return command()
    except (Conflict, Invalid, Forbidden) as exc:
        flash(_problem(exc), "error")
        return None


def _problem(exc: CasesError) -> str:
    code = getattr(exc, "code", "")
    if code == "MESSAGE_LOCKED":
        return _("Someone else is working on this message.")
    if code == "MESSAGE_IN_CASE":
        return _("This message belongs to an open case.")
    return _("That could not be done.")


# --- error pages --------------------------------------------------------------------------------
def _is_page(path: str) -> bool:
    """The API, the webhooks and the probes answer JSON errors; everything else is a page."""
    probes = ("/healthz", "/readyz", "/metrics")
    return not path.startswith(("/api/", "/webhooks/")) and path not in probes


def _page_not_found(exc: NoSuchPage):
    if not _is_page(request.path):
        return error_response(404, "NOT_FOUND", exc.description or "Not found.")
    _prepare_language()
    return page("error.html", 404, title=_("Not found"), reason="missing")


def _page_failed(exc: Exception):
    if not _is_page(request.path):
        return unexpected_error(exc)
    log.exception("a page failed")
    _prepare_language()
    return page("error.html", 500, title=_("Something went wrong on our side"), reason="failed")

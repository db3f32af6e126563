"""The pages, at ``/``: signing in (and out), setting a password from a one-time link, and the
inbox. Pages call the same service layer as ``/api/v1`` with the signed-in user as the actor, so
a page can show or do nothing the API would refuse that user."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from services.cases.domain import CasesError, Invalid, TooManyAttempts
from services.cases.handlers import inbox, org, sign_in
from services.cases.ui import i18n, session
from shared.uow import ServiceStore

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)
OPEN_PAGES = {"ui.sign_in", "ui.set_password", "ui.static"}


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


def _translations():
    return current_app.extensions["upartners.catalogues"][g.get("language", "en")]


def _(text: str, **values: Any) -> str:
    """Translate a string of the Python side (form errors, titles)."""
    translated = _translations().gettext(text)
    return translated % values if values else translated


def _store() -> ServiceStore:
    return current_app.extensions["upartners.store"]


@bp.before_request
def _prepare():
    signed_in = session.current(_store())
    g.language = i18n.choose(
        signed_in.language if signed_in else None, request.headers.get("Accept-Language")
    )
    if not session.csrf_ok():
        return _page("error.html", 403, title=_("This form has expired"), reason="csrf")
    if signed_in is None and request.endpoint not in OPEN_PAGES:
        return redirect(url_for("ui.sign_in", next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def _private(response):
    response.headers.setdefault("Cache-Control", "no-store")  # pages show one user's view
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint == "ui.set_password":
        response.headers["Referrer-Policy"] = "no-referrer"  # the link's token is in the path
    return response


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


def _page(template: str, status: int = 200, **values: Any):
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
            signed_in = sign_in.sign_in(_store(), email, password, request.remote_addr or "")
        except TooManyAttempts as exc:
            minutes = max(1, round(exc.retry_after / 60))
            error = _(
                "Too many failed attempts. Try again in %(minutes)s minutes.", minutes=minutes
            )
            return _page("sign_in.html", 429, email=email, error=error)
        if signed_in is None:
            error = _("That email and password do not match an active account.")
            return _page("sign_in.html", 401, email=email, error=error)
        session.begin(signed_in)
        return redirect(_safe_next(request.args.get("next")))
    return _page("sign_in.html", email=email, error=error)


def _safe_next(target: str | None) -> str:
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
    holder = sign_in.link_holder(_store(), token[:100])
    if holder is None:
        return _page("error.html", 404, title=_("This link is no longer valid"), reason="link")
    name, email = holder
    error = None
    if request.method == "POST":
        password = request.form.get("password", "")
        if password != request.form.get("confirm", ""):
            error = _("The two passwords differ.")
        else:
            try:
                signed_in = sign_in.set_password(_store(), token[:100], password)
            except Invalid as exc:
                error = _(exc.fields["password"][0])
            else:
                if signed_in is not None:
                    session.begin(signed_in)
                    return redirect(url_for("ui.inbox_page"))
                return _page(
                    "error.html", 404, title=_("This link is no longer valid"), reason="link"
                )
    return _page("set_password.html", 400 if error else 200, name=name, email=email, error=error)


# --- the inbox ----------------------------------------------------------------------------------
@bp.get("/inbox")
def inbox_page():
    actor = g.signed_in.actor
    try:
        page = inbox.list_messages(_store(), actor, folder="inbox", limit=50)
        counts = inbox.message_counts(_store(), actor)
        timezone = org.get_org(_store(), actor).timezone
    except CasesError:
        return _page("error.html", 404, title=_("Not found"), reason="missing")
    return _page(
        "inbox.html",
        messages=page.items,
        count=counts.folders.get("inbox", 0),
        when=lambda moment: i18n.when(moment, g.language, timezone),
    )

"""The signed-in user's own pages: notifications (with the unread count of the top bar) and the
profile (name, language, password)."""

from __future__ import annotations

from flask import Blueprint, Flask, flash, g, redirect, request, url_for

from services.cases.domain import Invalid
from services.cases.handlers import notifications, people, sign_in
from services.cases.ui import i18n, session
from services.cases.ui.pages import _, do, page, protect, store

bp = Blueprint("ui_people", __name__)
protect(bp)  # signed-in users only, CSRF, private headers: as every page


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    app.context_processor(_unread)


def _unread() -> dict[str, int | None]:
    """The top bar's unread count, on every page of a signed-in user."""
    signed_in = g.get("signed_in")
    if signed_in is None:
        return {"unread": None}
    return {"unread": notifications.unread_count(store(), signed_in.actor)}


@bp.get("/notifications")
def notification_list():
    listing = notifications.list_notifications(
        store(), g.signed_in.actor, cursor=request.args.get("cursor") or None
    )
    return page("notifications.html", items=listing.items, next_cursor=listing.next_cursor)


@bp.post("/notifications/<notification_id>/read")
def read_notification(notification_id: str):
    read = notifications.mark_notification_read(store(), g.signed_in.actor, notification_id[:64])
    if read.export is not None:
        return redirect(url_for("ui_exports.export_list"))
    return redirect(url_for("ui_cases.case_page", case_id=read.case))


@bp.post("/notifications/read")
def read_all_notifications():
    notifications.mark_all_notifications_read(store(), g.signed_in.actor)
    return redirect(url_for("ui_people.notification_list"))


@bp.route("/profile", methods=["GET", "POST"])
def profile():
    actor = g.signed_in.actor
    error = None
    if request.method == "POST":
        form = request.form.get("form")
        if form == "details":
            name = request.form.get("name", "").strip()[:128]
            language = request.form.get("language") or None
            if language is not None and language not in i18n.LANGUAGES:
                language = None
            rename = {"name": name}
            renamed = name and do(lambda: people.update_user(store(), actor, actor.user_id, rename))
            if renamed:
                sign_in.set_language(store(), actor, language)
                # Said in the language just chosen: the next page is in it.
                g.language = i18n.choose(language, request.headers.get("Accept-Language"))
                flash(_("Saved."), "done")
                return redirect(url_for("ui_people.profile"))
            error = _("Give your name.")
        elif form == "password":
            new = request.form.get("password", "")
            if new != request.form.get("confirm", ""):
                error = _("The two passwords differ.")
            else:
                try:
                    signed_in = sign_in.change_password(
                        store(), actor, request.form.get("current", ""), new
                    )
                except Invalid as exc:
                    error = _(exc.fields["password"][0])
                else:
                    if signed_in is None:
                        error = _("That is not your current password.")
                    else:
                        session.begin(signed_in)  # the other sessions have ended
                        flash(_("Password changed. Your other sessions have ended."), "done")
                        return redirect(url_for("ui_people.profile"))
    me = people.whoami(store(), actor)
    return page(
        "profile.html",
        400 if error else 200,
        me=me,
        error=error,
        languages=i18n.NAMES,
        chosen=g.signed_in.language,
    )

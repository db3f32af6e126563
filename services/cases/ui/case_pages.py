"""The case pages: the list of open or closed cases, opening a case from a message, and a case's
page (its timeline, oldest first, and what its workers do: reply, note, close, reopen, watch).
Like every page, they call the same service layer as the API with the signed-in user."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, abort, flash, g, redirect, request, url_for

from services.cases.domain import InvalidCursor, Refused
from services.cases.handlers import case_reads, cases, inbox, labels, org, people
from services.cases.ui import i18n
from services.cases.ui.answer_picker import prefilled
from services.cases.ui.pages import _, answer_required, do, page, protect, safe_next, store
from shared.db import utcnow

bp = Blueprint("ui_cases", __name__)
protect(bp)  # signed-in users only, CSRF, private headers: as every page


def register(app: Flask) -> None:
    app.register_blueprint(bp)


def _when():
    timezone = org.get_org(store(), g.signed_in.actor).timezone
    return lambda moment: i18n.when(moment, g.language, timezone)


@bp.get("/cases")
def case_list():
    state = request.args.get("state", "open")
    if state not in ("open", "closed"):
        state = "open"
    try:
        listing = case_reads.list_cases(
            store(), g.signed_in.actor, state=state, cursor=request.args.get("cursor") or None
        )
    except InvalidCursor:
        return redirect(url_for("ui_cases.case_list", state=state))
    return page(
        "cases.html",
        state=state,
        cases=listing.items,
        next_cursor=listing.next_cursor,
        when=_when(),
    )


def assignees() -> list[tuple[Any, list[Any]]]:
    """Who a case can go to, for the "Assign to" picker: each partner the user sees, then the
    active users of it the user may see (an agent sees their own partner's)."""
    actor = g.signed_in.actor
    users = [u for u in people.list_users(store(), actor) if u.active and u.partner]
    return [
        (partner, [u for u in users if u.partner.id == partner.id])
        for partner in people.list_partners(store(), actor)
    ]


def chosen_assignee() -> tuple[str, str | None]:
    """The picker's value: "partner" or "partner/user"."""
    partner, _slash, user = request.form.get("assignee", "")[:130].partition("/")
    return partner, user or None


@bp.route("/messages/<message_id>/open-case", methods=["GET", "POST"])
def open_case(message_id: str):
    """The "Open a case" dialog, as a page of its own: the message, a summary, who the case goes
    to (a partner, or one of its users), and the first message to send to the contact."""
    actor = g.signed_in.actor
    message = inbox.get_message(store(), actor, message_id[:64])
    back = safe_next(request.values.get("back"))
    if message.case:
        return redirect(url_for("ui_cases.case_page", case_id=message.case))
    error = None
    summary = request.form.get("summary", "").strip()[:1000]
    reply = request.form.get("reply", "").strip()[:4096] or None
    answer = request.form.get("answer", "").strip()[:64] or None  # what the message started from
    if request.method == "POST":
        partner, user = chosen_assignee()
        if not summary or not partner:
            error = _("Give the case a summary and a partner.")
        else:
            try:
                opened = do(
                    lambda: cases.open_case(
                        store(),
                        actor,
                        summary=summary,
                        partner=partner,
                        user=user,
                        message=message.id,
                        reply=reply,
                        answer=answer,
                    )
                )
            except Refused:  # the org requires a ready-made answer for the first message
                error = answer_required()
            else:
                if opened is not None:
                    case, _created = opened
                    return redirect(url_for("ui_cases.case_page", case_id=case.id))
                return redirect(back)
    return page(
        "open_case.html",
        400 if error else 200,
        message=message,
        summary=summary,
        reply=reply or "",
        assignees=assignees(),
        current=actor.partner_id or "",
        back=back,
        error=error,
        when=_when(),
    )


@bp.get("/cases/<case_id>")
def case_page(case_id: str):
    text, answer = prefilled(request.args.get("answer"), request.args.get("language"))
    return _case_page(case_id, reply_text=text, reply_answer=answer)


def _case_page(case_id: str, status: int = 200, **reply: Any):
    """A case's page; ``reply``: what its send box holds (``reply_text``, ``reply_answer``: the
    ready-made answer it started from) and why it was refused (``reply_error``)."""
    actor = g.signed_in.actor
    case = case_reads.get_case(store(), actor, case_id[:64])
    try:
        timeline = case_reads.case_timeline(
            store(), actor, case.id, cursor=request.args.get("cursor") or None, limit=200
        )
    except InvalidCursor:
        return redirect(url_for("ui_cases.case_page", case_id=case.id))
    return page(
        "case.html",
        status,
        case=case,
        entries=timeline.items,
        next_cursor=timeline.next_cursor,
        open_days=_days(case.reopened_on or case.opened_on),
        assignees=assignees(),
        labels=labels.list_labels(store(), actor),
        case_labels={label.id for label in case.labels},
        when=_when(),
        **({"reply_text": "", "reply_answer": None, "reply_error": None} | reply),
    )


@bp.get("/cases/<case_id>/entries")
def case_entries(case_id: str):
    """The timeline's entries alone: what the case page asks for every few seconds, to show the
    contact's new messages and what others did without a reload (live.js)."""
    actor = g.signed_in.actor
    timeline = case_reads.case_timeline(store(), actor, case_id[:64], limit=200)
    return page("case_entries.html", entries=timeline.items, when=_when())


def _days(since: datetime) -> int:
    return max(0, (utcnow() - since).days)


@bp.post("/cases/<case_id>/<command>")
def act_on_case(case_id: str, command: str):
    actor, text = g.signed_in.actor, request.form.get("text", "").strip()
    case_id = case_id[:64]
    partner, user = chosen_assignee()
    answer = request.form.get("answer", "").strip()[:64] or None  # the answer a reply started from
    chosen_labels = [label[:64] for label in request.form.getlist("labels")][:100]
    commands = {
        "reassign": lambda: cases.reassign_case(
            store(), actor, case_id, partner=partner, user=user
        ),
        "labels": lambda: cases.set_case_labels(store(), actor, case_id, chosen_labels),
        "summary": lambda: cases.set_case_summary(store(), actor, case_id, text[:1000]),
        "reply": lambda: cases.reply_in_case(store(), actor, case_id, text[:4096], answer),
        "note": lambda: cases.add_note(store(), actor, case_id, text[:10000]),
        "close": lambda: cases.close_case(store(), actor, case_id, text[:10000]),
        "reopen": lambda: cases.reopen_case(store(), actor, case_id, text[:10000] or None),
        "watch": lambda: cases.watch_case(store(), actor, case_id, True),
        "unwatch": lambda: cases.watch_case(store(), actor, case_id, False),
    }
    if command not in commands:
        abort(404)
    if command in ("reply", "note", "close", "summary") and not text:
        flash(_("Write something first."), "error")
        return redirect(url_for("ui_cases.case_page", case_id=case_id))
    try:
        done_it = do(commands[command]) is not None
    except Refused:  # the org requires a ready-made answer: the reply stays in the send box
        return _case_page(case_id, 400, reply_text=text[:4096], reply_error=answer_required())
    if done_it:
        done = {
            "reassign": _("Saved."),
            "labels": _("Saved."),
            "summary": _("Saved."),
            "reply": _("Reply queued: the flow engine sends it to the contact."),
            "note": _("Note added."),
            "close": _("Case closed."),
            "reopen": _("Case reopened."),
        }
        if command in done:
            flash(done[command], "done")
    return redirect(url_for("ui_cases.case_page", case_id=case_id))

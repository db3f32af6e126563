"""Ready-made answers in the reply boxes: the search every reply box offers (by text or label, in
the contact's language: cases does not keep it, so the user's language is offered and another
can be picked), as a small fragment that live.js puts under the box ("Insert" fills the box for
editing) or, without JavaScript, as a page whose "Use this answer" opens the reply filled in: a
message's reply page here, a case's send box on the case page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, request, url_for
from marshmallow import ValidationError

from services.cases.answers_domain import language_code
from services.cases.domain import NotFound
from services.cases.handlers import answers, inbox, labels
from services.cases.schemas import AnswerQuery
from services.cases.ui import i18n
from services.cases.ui.pages import _, page, protect, safe_next, store

bp = Blueprint("ui_answers", __name__)
protect(bp)  # signed-in users only, CSRF, private headers: as every page

SHOWN = 20  # answers a search shows at most: a reply box stays small


def register(app: Flask) -> None:
    app.register_blueprint(bp)


def answer_languages(contact_language: str | None = None) -> list[tuple[str, str]]:
    """The languages the pickers offer: any, then the pages' own (in their own names), and the
    contact's when it is none of these (named in the page's language)."""
    offered = [
        ((language_code(code) or code).split("-")[0], name) for code, name in i18n.NAMES.items()
    ]
    if contact_language and contact_language.split("-")[0] not in {code for code, _ in offered}:
        offered.append((contact_language, i18n.language_name(contact_language, g.language)))
    return [("", _("Any language")), *offered]


def reply_language() -> str:
    """The language offered first: the user's page language (``pt_BR`` -> ``pt``)."""
    return (language_code(g.get("language", "en")) or "en").split("-")[0]


@bp.app_context_processor
def _picker_globals() -> dict[str, Any]:
    return {"answer_languages": answer_languages, "reply_language": reply_language}


def prefilled(answer_id: str | None, language: str | None) -> tuple[str, str | None]:
    """The text of a chosen answer in the language asked for, and its id; nothing if the user may
    not see it."""
    if not answer_id:
        return "", None
    try:
        answer = answers.get_answer(
            store(), g.signed_in.actor, answer_id[:64], language_code(language)
        )
    except NotFound:
        return "", None
    return answer.text.answer, answer.id


@bp.get("/answers/pick")
def pick():
    actor = g.signed_in.actor
    message = request.args.get("message", "")[:64] or None
    case = request.args.get("case", "")[:64] or None
    fragment = request.args.get("fragment") == "1"
    error = None
    try:
        query = AnswerQuery().load(
            {k: v for k, v in request.args.items() if k in ("q", "label", "language") and v}
        )
    except ValidationError:
        query, error = {}, _("That search could not be read: try other words.")
    found = answers.list_answers(
        store(),
        actor,
        q=query.get("q"),
        label=query.get("label"),
        language=query.get("language"),
        limit=SHOWN,
    )
    language = query.get("language")

    def use_url(answer_id: str) -> str | None:
        if message:
            return url_for(
                "ui_answers.reply_page", message_id=message, answer=answer_id, language=language
            )
        if case:
            return url_for(
                "ui_cases.case_page",
                case_id=case,
                answer=answer_id,
                language=language,
                _anchor="reply",
            )
        return None

    values = {"answers": found, "use_url": use_url, "fragment": fragment}
    if fragment:
        return page("answer_list.html", 400 if error else 200, **values)
    back = None
    if message:
        back = url_for("ui_answers.reply_page", message_id=message)
    elif case:
        back = url_for("ui_cases.case_page", case_id=case, _anchor="reply")
    return page(
        "answer_pick.html",
        400 if error else 200,
        query=query,
        chosen_language=language if "language" in request.args else reply_language(),
        labels=labels.list_labels(store(), actor),
        message=message,
        case=case,
        back=back,
        error=error,
        **values,
    )


@bp.get("/messages/<message_id>/reply")
def reply_page(message_id: str):
    """A message's reply on a page of its own: the reply box filled in with a chosen answer."""
    message = inbox.get_message(store(), g.signed_in.actor, message_id[:64])
    text, answer = prefilled(request.args.get("answer"), request.args.get("language"))
    return reply_form(message, text, answer, None)


def reply_form(message, text: str, answer: str | None, error: str | None):
    return page(
        "reply.html",
        400 if error else 200,
        message=message,
        text=text,
        answer=answer,
        error=error,
        back=safe_next(request.values.get("back")),
    )

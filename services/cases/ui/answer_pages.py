"""The organization's ready-made answers, for administrators: the list (searchable), a new
answer, an answer's page (change it and its translations, delete it after asking again), and a
CSV import whose row problems are shown by line. Forms are loaded with the API's own schemas and
saved by the same service-layer functions as ``/api/v1/answers``."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, request, url_for
from marshmallow import ValidationError

from services.cases.answers_domain import MAX_IMPORT_CHARS
from services.cases.domain import Invalid
from services.cases.handlers import answers, labels
from services.cases.schemas import AnswerChangesSchema, AnswerQuery, AnswerSchema
from services.cases.ui.org_blueprint import admins_only, attempt, bp
from services.cases.ui.pages import _, do, page, store

BLANK = {"question": "", "answer": "", "language": "", "labels": set(), "translations": []}


def _form_from_request() -> dict[str, Any]:
    rows = zip(
        request.form.getlist("t_language"),
        request.form.getlist("t_question"),
        request.form.getlist("t_answer"),
        strict=False,
    )
    return {
        "question": request.form.get("question", "").strip(),
        "answer": request.form.get("answer", "").strip(),
        "language": request.form.get("language", "").strip(),
        "labels": set(request.form.getlist("labels")),
        "translations": [
            {"language": lang.strip(), "question": asked.strip(), "answer": said.strip()}
            for lang, asked, said in list(rows)[:30]
            if lang.strip() or asked.strip() or said.strip()
        ],
    }


def _load(schema, form: dict[str, Any]) -> tuple[dict | None, str | None]:
    try:
        values = schema.load(
            {
                "question": form["question"],
                "answer": form["answer"],
                "language": form["language"] or None,
                "labels": sorted(form["labels"]),
                "translations": form["translations"],
            }
        )
    except ValidationError as exc:
        fields = sorted(exc.messages) if isinstance(exc.messages, dict) else []
        return None, _("Check these fields: %(fields)s", fields=", ".join(fields))
    return values, None


def _invalid() -> dict[str, str]:
    return {"INVALID": _("A label is unknown, or a translation repeats the answer's language.")}


@bp.route("/answers", methods=["GET", "POST"])
def answer_list():
    admins_only()
    actor = g.signed_in.actor
    error, form = None, dict(BLANK)
    if request.method == "POST":
        form = _form_from_request()
        values, error = _load(AnswerSchema(), form)
        if values is not None:
            made, error = attempt(lambda: answers.create_answer(store(), actor, values), _invalid())
            if made is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.answer_list"))
    return _list_page(error, form)


def _list_page(error: str | None, form: dict[str, Any], problems=None, status: int = 0):
    actor = g.signed_in.actor
    try:
        query = AnswerQuery().load({k: v for k, v in request.args.items() if k == "q" and v})
    except ValidationError:
        query = {}
    return page(
        "org_answers.html",
        status or (400 if error or problems else 200),
        answers=answers.list_answers(store(), actor, q=query.get("q"), limit=500),
        q=query.get("q", ""),
        labels=labels.list_labels(store(), actor),
        form=form,
        error=error,
        problems=problems or [],
        max_kib=MAX_IMPORT_CHARS // 1024,
    )


@bp.post("/answers/import")
def answer_import():
    """A CSV file of answers, imported all or nothing; the problems of its rows, by line."""
    admins_only()
    upload = request.files.get("file")
    raw = upload.read(MAX_IMPORT_CHARS * 4 + 1) if upload else b""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _list_page(_("The file must be CSV in UTF-8."), dict(BLANK))
    if not text.strip():
        return _list_page(_("Choose a CSV file first."), dict(BLANK))
    try:
        imported = answers.import_answers(store(), g.signed_in.actor, text)
    except Invalid as exc:
        problems = [
            (_("The file") if where == "file" else where.replace("line", _("Line"), 1), messages)
            for where, messages in exc.fields.items()
        ]
        return _list_page(_("Nothing was imported: fix these rows first."), dict(BLANK), problems)
    flash(_("Answers imported: %(count)s.", count=imported.imported), "done")
    return redirect(url_for("ui_admin.answer_list"))


@bp.route("/answers/<answer_id>", methods=["GET", "POST"])
def answer_page(answer_id: str):
    admins_only()
    actor, answer_id = g.signed_in.actor, answer_id[:64]
    answer = answers.get_answer(store(), actor, answer_id)  # NotFound: the Not found page
    error = None
    form = {
        "question": answer.question,
        "answer": answer.answer,
        "language": answer.language or "",
        "labels": {label.id for label in answer.labels},
        "translations": [vars(t) for t in answer.translations],
    }
    if request.method == "POST":
        form = _form_from_request()
        values, error = _load(AnswerChangesSchema(), form)
        if values is not None:
            saved, error = attempt(
                lambda: answers.update_answer(store(), actor, answer_id, values), _invalid()
            )
            if saved is not None:
                flash(_("Saved."), "done")
                return redirect(url_for("ui_admin.answer_page", answer_id=answer_id))
    return page(
        "org_answer.html",
        400 if error else 200,
        answer=answer,
        form=form,
        labels=labels.list_labels(store(), actor),
        error=error,
    )


@bp.post("/answers/<answer_id>/delete")
def answer_delete(answer_id: str):
    admins_only()
    answer_id = answer_id[:64]
    if request.form.get("confirm") != "yes":
        flash(_("Tick the box to confirm that the answer is to be deleted."), "error")
        return redirect(url_for("ui_admin.answer_page", answer_id=answer_id))
    if do(lambda: answers.delete_answer(store(), g.signed_in.actor, answer_id) or True):
        flash(_("The answer is deleted."), "done")
    return redirect(url_for("ui_admin.answer_list"))

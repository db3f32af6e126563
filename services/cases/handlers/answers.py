"""Ready-made answers: the org's list of questions and answers (with labels and translations)
that partners start their replies from. Administrators keep them (one by one, or a CSV imported
all or nothing); every user of the org reads them, a restricted partner only those with no label
or one of its labels. Also the check a reply goes through when the org requires an answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, func, not_, or_, select, true
from sqlalchemy.orm import Session

from services.cases.answers_domain import (
    AnswerText,
    can_see_answer,
    check_reply_answer,
    choose_text,
    read_answer_rows,
    speaks,
)
from services.cases.domain import Actor, Invalid, NotFound
from services.cases.handlers.access import require_admin
from services.cases.handlers.labels import known_labels
from services.cases.handlers.rows import ensure_org
from services.cases.models import Answer, AnswerLabel, AnswerTranslation, Label, Org
from services.cases.views import AnswerImportView, AnswerTextView, AnswerView, Ref
from shared.db import new_id
from shared.uow import ServiceStore

SCANNED = 2000  # answers read for one search at most, before the language filter


def answer_visibility(actor: Actor) -> Any:
    """SQL twin of ``can_see_answer``."""
    if actor.is_admin or not actor.restricted:
        return true()
    labelled = exists().where(AnswerLabel.answer_id == Answer.id)
    if not actor.partner_labels:
        return not_(labelled)
    return or_(not_(labelled), labelled.where(AnswerLabel.label_id.in_(actor.partner_labels)))


def _views(
    session: Session, actor: Actor, answers: Sequence[Answer], language: str | None
) -> list[AnswerView]:
    ids = [a.id for a in answers]
    labels: dict[str, list[Ref]] = {}
    translations: dict[str, dict[str, AnswerText]] = {}
    if ids:
        rows = session.execute(
            select(AnswerLabel.answer_id, Label.id, Label.name)
            .join(Label, Label.id == AnswerLabel.label_id)
            .where(AnswerLabel.answer_id.in_(ids), Label.deleted_at.is_(None))
            .order_by(Label.name)
        )
        for answer_id, label_id, name in rows:
            if actor.sees_label(label_id):
                labels.setdefault(answer_id, []).append(Ref(label_id, name))
        for t in session.scalars(
            select(AnswerTranslation)
            .where(AnswerTranslation.answer_id.in_(ids))
            .order_by(AnswerTranslation.language)
        ):
            translations.setdefault(t.answer_id, {})[t.language] = AnswerText(
                t.language, t.question, t.answer
            )
    views = []
    for answer in answers:
        default = AnswerText(answer.language, answer.question, answer.answer)
        translated = translations.get(answer.id, {})
        chosen = choose_text(language, default, translated)
        views.append(
            AnswerView(
                id=answer.id,
                question=answer.question,
                answer=answer.answer,
                language=answer.language,
                labels=labels.get(answer.id, []),
                translations=[
                    AnswerTextView(t.language, t.question, t.answer) for t in translated.values()
                ],
                text=AnswerTextView(chosen.language, chosen.question, chosen.answer),
            )
        )
    return views


def _label_ids(session: Session, answer_id: str) -> set[str]:
    return set(
        session.scalars(select(AnswerLabel.label_id).where(AnswerLabel.answer_id == answer_id))
    )


def load_answer(session: Session, actor: Actor, answer_id: str) -> Answer:
    answer = session.get(Answer, answer_id)
    if (
        answer is None
        or answer.org != actor.org
        or not can_see_answer(actor, _label_ids(session, answer.id))
    ):
        raise NotFound("answer")
    return answer


def list_answers(
    store: ServiceStore,
    actor: Actor,
    *,
    q: str | None = None,
    label: str | None = None,
    language: str | None = None,
    limit: int = 100,
) -> list[AnswerView]:
    """The answers the actor sees, by question: ``q`` is a case-insensitive part of a question,
    an answer (or a translation of either) or a label's name; ``label`` one label; ``language``
    keeps the answers that have a text in that language (or say no language) and shows each in
    it (``text``)."""
    with store.unit_of_work() as uow:
        session = uow.session
        query = select(Answer).where(Answer.org == actor.org, answer_visibility(actor))
        if q:
            translated = exists().where(
                AnswerTranslation.answer_id == Answer.id,
                or_(
                    AnswerTranslation.question.icontains(q, autoescape=True),
                    AnswerTranslation.answer.icontains(q, autoescape=True),
                ),
            )
            named = (
                exists()
                .where(AnswerLabel.answer_id == Answer.id)
                .where(
                    AnswerLabel.label_id == Label.id,
                    Label.deleted_at.is_(None),
                    Label.name.icontains(q, autoescape=True),
                )
            )
            if actor.restricted and not actor.is_admin:
                named = named.where(Label.id.in_(actor.partner_labels))
            query = query.where(
                or_(
                    Answer.question.icontains(q, autoescape=True),
                    Answer.answer.icontains(q, autoescape=True),
                    translated,
                    named,
                )
            )
        if label:
            query = query.where(
                exists().where(AnswerLabel.answer_id == Answer.id, AnswerLabel.label_id == label)
            )
        answers = session.scalars(
            query.order_by(func.lower(Answer.question), Answer.id).limit(SCANNED)
        ).all()
        if language:
            languages: dict[str, set[str]] = {}
            for answer_id, code in session.execute(
                select(AnswerTranslation.answer_id, AnswerTranslation.language).where(
                    AnswerTranslation.answer_id.in_([a.id for a in answers])
                )
            ):
                languages.setdefault(answer_id, set()).add(code)
            answers = [
                a for a in answers if speaks(language, a.language, languages.get(a.id, set()))
            ]
        return _views(session, actor, answers[:limit], language)


def get_answer(
    store: ServiceStore, actor: Actor, answer_id: str, language: str | None = None
) -> AnswerView:
    with store.unit_of_work() as uow:
        answer = load_answer(uow.session, actor, answer_id)
        return _views(uow.session, actor, [answer], language)[0]


def _check_translations(language: str | None, translations: list[dict[str, Any]]) -> None:
    if language and any(t["language"] == language for t in translations):
        raise Invalid({"translations": ["A translation repeats the answer's own language."]})


def _set_labels(session: Session, actor: Actor, answer: Answer, label_ids: list[str]) -> None:
    known_labels(session, actor, label_ids, "labels")  # Invalid for an unknown label
    session.execute(delete(AnswerLabel).where(AnswerLabel.answer_id == answer.id))
    session.add_all(AnswerLabel(answer_id=answer.id, label_id=label) for label in set(label_ids))


def _set_translations(session: Session, answer: Answer, translations: list[dict]) -> None:
    session.execute(delete(AnswerTranslation).where(AnswerTranslation.answer_id == answer.id))
    session.add_all(
        AnswerTranslation(
            answer_id=answer.id, language=t["language"], question=t["question"], answer=t["answer"]
        )
        for t in translations
    )


def create_answer(store: ServiceStore, actor: Actor, values: dict[str, Any]) -> AnswerView:
    require_admin(actor)
    _check_translations(values.get("language"), values.get("translations", []))
    with store.unit_of_work() as uow:
        session = uow.session
        ensure_org(session, actor.org)
        answer = Answer(
            id=new_id(),
            org=actor.org,
            question=values["question"],
            answer=values["answer"],
            language=values.get("language"),
        )
        session.add(answer)
        session.flush()
        _set_labels(session, actor, answer, values.get("labels", []))
        _set_translations(session, answer, values.get("translations", []))
        uow.commit()
        return _views(session, actor, [answer], None)[0]


def update_answer(
    store: ServiceStore, actor: Actor, answer_id: str, changes: dict[str, Any]
) -> AnswerView:
    with store.unit_of_work() as uow:
        session = uow.session
        answer = load_answer(session, actor, answer_id)
        require_admin(actor)
        language = changes.get("language", answer.language)
        if "translations" in changes:
            _check_translations(language, changes["translations"])
        elif "language" in changes and language:
            taken = session.get(AnswerTranslation, (answer.id, language))
            if taken is not None:
                raise Invalid({"language": ["The answer has a translation into that language."]})
        for key in ("question", "answer", "language"):
            if key in changes:
                setattr(answer, key, changes[key])
        if "labels" in changes:
            _set_labels(session, actor, answer, changes["labels"])
        if "translations" in changes:
            _set_translations(session, answer, changes["translations"])
        uow.commit()
        return _views(session, actor, [answer], None)[0]


def delete_answer(store: ServiceStore, actor: Actor, answer_id: str) -> None:
    with store.unit_of_work() as uow:
        session = uow.session
        answer = load_answer(session, actor, answer_id)
        require_admin(actor)
        session.execute(delete(AnswerLabel).where(AnswerLabel.answer_id == answer.id))
        session.execute(delete(AnswerTranslation).where(AnswerTranslation.answer_id == answer.id))
        session.delete(answer)
        uow.commit()


def import_answers(store: ServiceStore, actor: Actor, text: str) -> AnswerImportView:
    """A CSV of answers (see ``read_answer_rows``), all or nothing: with any row's problem,
    Invalid names each line (``line 3``; ``file`` for the file as a whole) and nothing changes."""
    require_admin(actor)
    with store.unit_of_work() as uow:
        session = uow.session
        ensure_org(session, actor.org)
        by_name = {
            name.lower(): label_id
            for label_id, name in session.execute(
                select(Label.id, Label.name).where(
                    Label.org == actor.org, Label.deleted_at.is_(None)
                )
            )
        }
        rows, problems = read_answer_rows(text, by_name)
        if problems:
            raise Invalid(
                {(f"line {p.line}" if p.line else "file"): list(p.problems) for p in problems}
            )
        created = []
        for row in rows:
            answer = Answer(
                id=new_id(),
                org=actor.org,
                question=row.question,
                answer=row.answer,
                language=row.language,
            )
            created.append(answer)
            session.add(answer)
        session.flush()
        for answer, row in zip(created, rows, strict=True):
            session.add_all(AnswerLabel(answer_id=answer.id, label_id=lb) for lb in row.labels)
            session.add_all(
                AnswerTranslation(
                    answer_id=answer.id, language=t.language, question=t.question, answer=t.answer
                )
                for t in row.translations
            )
        uow.commit()
        return AnswerImportView(len(created), _views(session, actor, created, None))


def reply_answer(session: Session, actor: Actor, org: Org, answer_id: str | None) -> str | None:
    """The ready-made answer a reply started from: required of partners where the org says so
    (``Refused``), and one the actor sees (else ``Invalid`` on ``answer``)."""
    check_reply_answer(org.must_use_answers, actor, answer_id)
    if answer_id is None:
        return None
    try:
        return load_answer(session, actor, answer_id).id
    except NotFound:
        raise Invalid({"answer": ["No such ready-made answer."]}) from None

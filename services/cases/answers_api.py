"""HTTP only: the ready-made answers' routes of the partner API (``/api/v1/answers``), declared
with ``route`` like those of services/cases/api.py, which imports this module to register them."""

from __future__ import annotations

from services.cases import schemas as s
from services.cases import views as v
from services.cases.handlers import answers
from services.cases.routing import ADMIN, actor, route, store


@route(
    "get",
    "/answers",
    "Ready-made answers the caller sees, by question; search by text, label and language.",
    query=s.AnswerQuery,
    answer=v.AnswerView,
    shape="list",
)
def list_answers(query):
    return answers.list_answers(store(), actor(), **query)


@route(
    "post",
    "/answers",
    "Add a ready-made answer.",
    ADMIN,
    body=s.AnswerSchema,
    answer=v.AnswerView,
    status=201,
)
def create_answer(body):
    return answers.create_answer(store(), actor(), body)


@route(
    "post",
    "/answers/import",
    "Import answers from CSV (question, answer, labels, language, question_<lang>, "
    "answer_<lang>): all or nothing; a row's problems come back by line.",
    ADMIN,
    body=s.AnswerImportSchema,
    answer=v.AnswerImportView,
    status=201,
)
def import_answers(body):
    return answers.import_answers(store(), actor(), body["csv"])


@route(
    "get",
    "/answers/<id:answer_id>",
    "One ready-made answer.",
    query=s.AnswerTextQuery,
    answer=v.AnswerView,
)
def get_answer(answer_id: str, query):
    return answers.get_answer(store(), actor(), answer_id, query.get("language"))


@route(
    "patch",
    "/answers/<id:answer_id>",
    "Change a ready-made answer (labels and translations are replaced when given).",
    ADMIN,
    body=s.AnswerChangesSchema,
    answer=v.AnswerView,
)
def update_answer(answer_id: str, body):
    return answers.update_answer(store(), actor(), answer_id, body)


@route(
    "delete",
    "/answers/<id:answer_id>",
    "Delete a ready-made answer.",
    ADMIN,
    shape="none",
    status=204,
)
def delete_answer(answer_id: str):
    answers.delete_answer(store(), actor(), answer_id)

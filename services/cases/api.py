"""HTTP only: the partner API's routes, each declared with ``route`` (services/cases/routing.py),
calling one function of the service layer. Every route is under ``/api/v1`` and answers JSON;
errors use the one shape of shared/http.py.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from services.cases import (
    answers_api,  # noqa: F401 (registers the answers' routes)
    api_exports,  # noqa: F401 (declares the export routes)
    openapi,
    stats_api,  # noqa: F401 (registers the statistics' routes)
)
from services.cases import schemas as s
from services.cases import views as v
from services.cases.domain import CasesError, InvalidCursor
from services.cases.handlers import (
    case_reads,
    cases,
    inbox,
    labels,
    notifications,
    org,
    people,
    replies,
    sign_in,
)
from services.cases.routing import (
    ADMIN,
    OPERATIONS,
    TOKEN_OWNERS,
    WORKERS,
    IdConverter,
    actor,
    bp,
    cases_error,
    cursor_error,
    route,
    store,
)
from shared.http import health_blueprint


def document() -> dict[str, Any]:
    """The OpenAPI document of every route declared below."""
    return openapi.document(tuple(OPERATIONS))


def register(app: Flask) -> None:
    """Wire the API into an app: the id converter, the error mapping, the blueprints."""
    app.url_map.converters["id"] = IdConverter
    app.register_error_handler(CasesError, cases_error)
    app.register_error_handler(InvalidCursor, cursor_error)
    app.register_blueprint(bp)
    app.register_blueprint(health_blueprint())


# --- me and the org -----------------------------------------------------------------------------
@route("get", "/me", "The caller: user, role, partner, org.", answer=v.MeView)
def me():
    return people.whoami(store(), actor())


@route("get", "/org", "The org's settings.", answer=v.OrgView)
def get_org():
    return org.get_org(store(), actor())


@route(
    "patch",
    "/org",
    "Change settings; emits org.updated.",
    ADMIN,
    body=s.OrgSettingsSchema,
    answer=v.OrgView,
)
def update_org(body):
    return org.update_org(store(), actor(), body)


@route(
    "get",
    "/org/catalog",
    "Groups and flows of the flow engine, by name.",
    ADMIN,
    answer=v.CatalogView,
)
def org_catalog():
    return org.org_catalog(store(), actor())


# --- partners -----------------------------------------------------------------------------------
@route(
    "get",
    "/partners",
    "Partners (others' as a directory of id and name for non-administrators).",
    answer=(v.PartnerView, v.Ref),
    shape="list",
)
def list_partners():
    return people.list_partners(store(), actor())


@route(
    "post",
    "/partners",
    "Add a partner.",
    ADMIN,
    body=s.PartnerSchema,
    answer=v.PartnerView,
    status=201,
)
def create_partner(body):
    return people.create_partner(store(), actor(), body)


@route(
    "get",
    "/partners/<id:partner_id>",
    "One partner (administrators, or its own users).",
    answer=v.PartnerView,
)
def get_partner(partner_id: str):
    return people.get_partner(store(), actor(), partner_id)


@route(
    "patch",
    "/partners/<id:partner_id>",
    "Change a partner, its restriction and labels.",
    ADMIN,
    body=s.PartnerChangesSchema,
    answer=v.PartnerView,
)
def update_partner(partner_id: str, body):
    return people.update_partner(store(), actor(), partner_id, body)


# --- users and tokens ---------------------------------------------------------------------------
@route(
    "get",
    "/users",
    "Users the caller may see.",
    query=s.UserQuery,
    answer=v.UserView,
    shape="list",
)
def list_users(query):
    return people.list_users(store(), actor(), query.get("partner"))


@route(
    "post",
    "/users",
    "Add a user.",
    "administrators; managers for their partner",
    body=s.UserSchema,
    answer=v.UserView,
    status=201,
)
def create_user(body):
    return people.create_user(store(), actor(), body)


@route("get", "/users/<id:user_id>", "One user.", answer=v.UserView)
def get_user(user_id: str):
    return people.get_user(store(), actor(), user_id)


@route(
    "patch",
    "/users/<id:user_id>",
    "Rename, change role or partner, deactivate.",
    "administrators; managers for their partner; anyone renames themselves",
    body=s.UserChangesSchema,
    answer=v.UserView,
)
def update_user(user_id: str, body):
    return people.update_user(store(), actor(), user_id, body)


@route(
    "get",
    "/users/<id:user_id>/tokens",
    "A user's tokens (never the secret).",
    TOKEN_OWNERS,
    answer=v.TokenView,
    shape="list",
)
def list_tokens(user_id: str):
    return people.list_tokens(store(), actor(), user_id)


@route(
    "post",
    "/users/<id:user_id>/tokens",
    "Create a token; shown this once.",
    TOKEN_OWNERS,
    body=s.TokenSchema,
    answer=v.NewToken,
    status=201,
)
def create_token(user_id: str, body):
    # the token is in this answer only (never cached: see _never_cached)
    return people.create_token(store(), actor(), user_id, body["description"])


@route(
    "delete",
    "/users/<id:user_id>/tokens/<id:token_id>",
    "Revoke a token.",
    TOKEN_OWNERS,
    answer=v.TokenView,
)
def revoke_token(user_id: str, token_id: str):
    return people.revoke_token(store(), actor(), user_id, token_id)


@route(
    "post",
    "/users/<id:user_id>/sign-in-link",
    "A one-time link for the user to set a password (an invitation, or a reset); shown once.",
    "administrators; managers for their partner",
    answer=v.SignInLinkView,
    status=201,
)
def make_sign_in_link(user_id: str):
    link = sign_in.make_link(store(), actor(), user_id)
    return v.SignInLinkView(f"/set-password/{link.token}", link.purpose, link.expires_at)


# --- labels -------------------------------------------------------------------------------------
@route("get", "/labels", "Labels the caller sees.", answer=v.LabelView, shape="list")
def list_labels():
    return labels.list_labels(store(), actor())


@route(
    "post",
    "/labels",
    "Add a label; emits label.created.",
    ADMIN,
    body=s.LabelSchema,
    answer=v.LabelView,
    status=201,
)
def create_label(body):
    return labels.create_label(store(), actor(), body)


@route("get", "/labels/<id:label_id>", "One label.", answer=v.LabelView)
def get_label(label_id: str):
    return labels.get_label(store(), actor(), label_id)


@route(
    "patch",
    "/labels/<id:label_id>",
    "Change a label; emits label.updated.",
    ADMIN,
    body=s.LabelChangesSchema,
    answer=v.LabelView,
)
def update_label(label_id: str, body):
    return labels.update_label(store(), actor(), label_id, body)


@route(
    "delete",
    "/labels/<id:label_id>",
    "Delete a label; emits label.deleted.",
    ADMIN,
    shape="none",
    status=204,
)
def delete_label(label_id: str):
    labels.delete_label(store(), actor(), label_id)


# --- messages -----------------------------------------------------------------------------------
@route(
    "get",
    "/messages",
    "One page of a folder (inbox, flagged, archived, unlabelled, sent), newest first; "
    "the sent folder holds replies.",
    query=s.MessageQuery,
    answer=(v.MessageView, v.OutgoingView),
    shape="page",
)
def list_messages(query):
    query["text"] = query.pop("q", None)
    return inbox.list_messages(store(), actor(), **query)


@route(
    "get",
    "/messages/counts",
    "Messages per folder and inbox messages per label.",
    query=s.CountsQuery,
    answer=v.Counts,
)
def message_counts(query):
    return inbox.message_counts(store(), actor(), **query)


@route(
    "post",
    "/messages/actions",
    "One action on many messages, all or none.",
    body=s.BulkMessageActionSchema,
    answer=v.MessageView,
    shape="list",
)
def act_on_messages(body):
    return inbox.act_on_messages(
        store(), actor(), body["messages"], body["action"], body.get("label")
    )


@route("get", "/messages/<id:message_id>", "One message.", answer=v.MessageView)
def get_message(message_id: str):
    return inbox.get_message(store(), actor(), message_id)


@route(
    "get",
    "/messages/<id:message_id>/history",
    "Who did what to the message.",
    answer=v.HistoryEntry,
    shape="list",
)
def message_history(message_id: str):
    return inbox.message_history(store(), actor(), message_id)


@route(
    "post",
    "/messages/<id:message_id>/actions",
    "Label, unlabel, flag, unflag, archive or restore.",
    body=s.MessageActionSchema,
    answer=v.MessageView,
)
def act_on_message(message_id: str, body):
    [message] = inbox.act_on_messages(
        store(), actor(), [message_id], body["action"], body.get("label")
    )
    return message


@route(
    "post",
    "/messages/<id:message_id>/reply",
    "Answer the contact; archives the message; emits outgoing.requested. `answer`: the "
    "ready-made answer the text started from (required of partners where the org says so: "
    "400 ANSWER_REQUIRED).",
    body=s.ReplySchema,
    answer=v.OutgoingView,
    status=201,
)
def reply_to_message(message_id: str, body):
    return replies.reply_to_message(store(), actor(), message_id, body["text"], body.get("answer"))


@route(
    "post",
    "/messages/<id:message_id>/lock",
    "Take the soft lock for a few minutes.",
    answer=v.MessageView,
)
def lock_message(message_id: str):
    return inbox.lock_message(store(), actor(), message_id)


@route("delete", "/messages/<id:message_id>/lock", "Release one's soft lock.", answer=v.MessageView)
def unlock_message(message_id: str):
    return inbox.unlock_message(store(), actor(), message_id)


# --- cases --------------------------------------------------------------------------------------
@route(
    "get",
    "/cases",
    "Cases the caller sees, newest first.",
    query=s.CaseQuery,
    answer=v.CaseView,
    shape="page",
)
def list_cases(query):
    return case_reads.list_cases(store(), actor(), **query)


@route(
    "post",
    "/cases",
    "Open a case (201), or get the contact's open one (200); emits case.opened.",
    body=s.OpenCaseSchema,
    answer=v.CaseView,
    status=201,
    also=(200,),
)
def open_case(body):
    case, created = cases.open_case(store(), actor(), **body)
    return case, 201 if created else 200


@route("get", "/cases/<id:case_id>", "One case.", answer=v.CaseView)
def get_case(case_id: str):
    return case_reads.get_case(store(), actor(), case_id)


@route(
    "get",
    "/cases/<id:case_id>/timeline",
    "Messages and actions, oldest first.",
    query=s.TimelineQuery,
    answer=v.TimelineEntry,
    shape="page",
)
def case_timeline(case_id: str, query):
    return case_reads.case_timeline(store(), actor(), case_id, **query)


@route(
    "post",
    "/cases/<id:case_id>/notes",
    "Add a note; emits case.note_added.",
    WORKERS,
    body=s.NoteSchema,
    answer=v.CaseView,
    status=201,
)
def add_note(case_id: str, body):
    return cases.add_note(store(), actor(), case_id, body["note"])


@route(
    "post",
    "/cases/<id:case_id>/reassign",
    "Reassign; emits case.reassigned.",
    WORKERS,
    body=s.ReassignSchema,
    answer=v.CaseView,
)
def reassign_case(case_id: str, body):
    return cases.reassign_case(store(), actor(), case_id, **body)


@route(
    "put",
    "/cases/<id:case_id>/summary",
    "Rewrite an open case's summary; emits case.summary_changed.",
    WORKERS,
    body=s.CaseSummarySchema,
    answer=v.CaseView,
)
def set_case_summary(case_id: str, body):
    return cases.set_case_summary(store(), actor(), case_id, body["summary"])


@route(
    "put",
    "/cases/<id:case_id>/labels",
    "Set the labels; emits case.labels_changed.",
    WORKERS,
    body=s.CaseLabelsSchema,
    answer=v.CaseView,
)
def set_case_labels(case_id: str, body):
    return cases.set_case_labels(store(), actor(), case_id, body["labels"])


@route(
    "post",
    "/cases/<id:case_id>/reply",
    "Message the contact; emits outgoing.requested. `answer`: as for a message's reply.",
    WORKERS,
    body=s.ReplySchema,
    answer=v.OutgoingView,
    status=201,
)
def reply_in_case(case_id: str, body):
    return cases.reply_in_case(store(), actor(), case_id, body["text"], body.get("answer"))


@route(
    "post",
    "/cases/<id:case_id>/close",
    "Close with a final note; emits case.closed.",
    WORKERS,
    body=s.NoteSchema,
    answer=v.CaseView,
)
def close_case(case_id: str, body):
    return cases.close_case(store(), actor(), case_id, body["note"])


@route(
    "post",
    "/cases/<id:case_id>/reopen",
    "Reopen; emits case.reopened.",
    WORKERS,
    body=s.ReopenSchema,
    answer=v.CaseView,
)
def reopen_case(case_id: str, body):
    return cases.reopen_case(store(), actor(), case_id, body.get("note"))


@route("put", "/cases/<id:case_id>/watch", "Watch: get notifications.", answer=v.CaseView)
def watch_case(case_id: str):
    return cases.watch_case(store(), actor(), case_id, True)


@route("delete", "/cases/<id:case_id>/watch", "Stop watching.", answer=v.CaseView)
def unwatch_case(case_id: str):
    return cases.watch_case(store(), actor(), case_id, False)


# --- notifications ------------------------------------------------------------------------------
@route(
    "get",
    "/notifications",
    "The caller's notifications, newest first.",
    query=s.NotificationQuery,
    answer=v.NotificationView,
    shape="page",
)
def list_notifications(query):
    return notifications.list_notifications(store(), actor(), **query)


@route("post", "/notifications/read", "Mark all of one's notifications read.", answer=v.Marked)
def mark_all_notifications_read():
    return v.Marked(notifications.mark_all_notifications_read(store(), actor()))


@route(
    "post",
    "/notifications/<id:notification_id>/read",
    "Mark one read.",
    answer=v.NotificationView,
)
def mark_notification_read(notification_id: str):
    return notifications.mark_notification_read(store(), actor(), notification_id)


# --- the document --------------------------------------------------------------------------------
@route(
    "get",
    "/openapi.json",
    "This document (no token needed).",
    openapi.ANYONE,
    shape="document",
)
def openapi_document():
    return document()

"""The cases service layer: one function per command of the partner API (and the CLI) and one
per consumed event, each in the module of its capability:

- ``access``: who is calling (tokens) and what they may see (messages, cases);
- ``org``, ``people``, ``labels``: the org's settings, its partners, users and tokens, its labels;
- ``inbox``: folders, counts, message actions and locks; ``replies``: answering a contact;
- ``counts``: the folder counts, kept as messages change (and rebuilt from them);
- ``cases``: opening, working and closing a case; ``case_reads``: case lists and timelines;
- ``notifications``: watchers and what they are told;
- ``sign_in``: the web pages' sign-in (one-time links, passwords, limits, sessions' users);
- ``consumers``: the events other services send (messages, labels, flowbridge's reports).

Below them: ``rows`` and ``contacts`` (loading rows many capabilities share), ``cache`` (what a
unit of work already loaded), ``changes`` (the one idiom for "change, version, event").

Commands take the store and the authenticated ``Actor``; they load only what the actor may see
(anything else is ``NotFound``, never told apart from a missing object), change state, emit the
events the change causes and commit once. Event handlers take the unit of work the dispatcher
opened (its inbox row makes them idempotent) and the envelope. Answers are partner-safe views
(services/cases/views.py): a contact is only ever its pseudonymous reference and the one field
the org chose to show. This package's ``__init__`` names the entry points for callers outside
the service layer (the CLI, the demo, tests); the HTTP and AMQP edges import the modules.
"""

from __future__ import annotations

from services.cases.handlers.access import (
    authenticate,
)
from services.cases.handlers.case_reads import (
    case_timeline,
    get_case,
    list_cases,
)
from services.cases.handlers.cases import (
    add_note,
    close_case,
    open_case,
    reassign_case,
    reopen_case,
    reply_in_case,
    set_case_labels,
    set_case_summary,
    watch_case,
)
from services.cases.handlers.consumers import (
    on_catalog_synced,
    on_contact_restored,
    on_contact_suspended,
    on_followup_started,
    on_message_labeled,
    on_message_received,
    on_outgoing_failed,
    on_outgoing_sent,
    prepare_message_events,
)
from services.cases.handlers.counts import (
    rebuild_message_counts,
)
from services.cases.handlers.inbox import (
    act_on_messages,
    get_message,
    list_messages,
    lock_message,
    message_counts,
    message_history,
    unlock_message,
)
from services.cases.handlers.labels import (
    create_label,
    delete_label,
    get_label,
    list_labels,
    update_label,
)
from services.cases.handlers.notifications import (
    list_notifications,
    mark_all_notifications_read,
    mark_notification_read,
)
from services.cases.handlers.org import (
    bootstrap_org,
    get_org,
    org_catalog,
    update_org,
)
from services.cases.handlers.people import (
    create_partner,
    create_token,
    create_user,
    get_partner,
    get_user,
    list_partners,
    list_tokens,
    list_users,
    revoke_token,
    update_partner,
    update_user,
    whoami,
)
from services.cases.handlers.replies import (
    reply_to_message,
)
from services.cases.handlers.sign_in import make_link as make_sign_in_link
from services.cases.views import Page

__all__ = [
    "make_sign_in_link",
    "Page",
    "act_on_messages",
    "add_note",
    "authenticate",
    "bootstrap_org",
    "case_timeline",
    "close_case",
    "create_label",
    "create_partner",
    "create_token",
    "create_user",
    "delete_label",
    "get_case",
    "get_label",
    "get_message",
    "get_org",
    "get_partner",
    "get_user",
    "list_cases",
    "list_labels",
    "list_messages",
    "list_notifications",
    "list_partners",
    "list_tokens",
    "list_users",
    "lock_message",
    "mark_all_notifications_read",
    "mark_notification_read",
    "message_counts",
    "message_history",
    "on_catalog_synced",
    "on_contact_restored",
    "on_contact_suspended",
    "on_followup_started",
    "on_message_labeled",
    "on_message_received",
    "on_outgoing_failed",
    "on_outgoing_sent",
    "open_case",
    "org_catalog",
    "prepare_message_events",
    "reassign_case",
    "rebuild_message_counts",
    "reopen_case",
    "reply_in_case",
    "reply_to_message",
    "revoke_token",
    "set_case_labels",
    "set_case_summary",
    "unlock_message",
    "update_label",
    "update_org",
    "update_partner",
    "update_user",
    "watch_case",
    "whoami",
]

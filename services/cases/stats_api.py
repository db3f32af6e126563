"""HTTP only: the statistics' routes of the partner API (``/api/v1/stats/...``), declared with
``route`` like those of services/cases/api.py, which imports this module to register them.

Every range is of whole days in the org's timezone (``from``, ``to``, both included; the last 30
days by default; at most 400), counted per day or per month (``period``)."""

from __future__ import annotations

from services.cases import schemas as s
from services.cases import stats
from services.cases import views as v
from services.cases.handlers import stat_reads
from services.cases.routing import ADMIN, actor, route, store

READERS = "administrators; a partner's users for their partner, managers for its users"


def _range(query) -> dict:
    return {"first": query.get("start"), "last": query.get("end")}


@route(
    "get",
    "/stats/org",
    "The org's daily or monthly counts and average durations.",
    ADMIN,
    query=s.StatsQuery,
    answer=v.StatsView,
)
def org_stats(query):
    return stat_reads.read_stats(
        store(), actor(), stats.ORG, period=query["period"], **_range(query)
    )


@route(
    "get",
    "/stats/partners/<id:partner_id>",
    "One partner's counts and average durations.",
    READERS,
    query=s.StatsQuery,
    answer=v.StatsView,
)
def partner_stats(partner_id: str, query):
    return stat_reads.read_stats(
        store(), actor(), stats.PARTNER, partner_id, period=query["period"], **_range(query)
    )


@route(
    "get",
    "/stats/users/<id:user_id>",
    "One user's counts (replies, cases, notes).",
    READERS,
    query=s.StatsQuery,
    answer=v.StatsView,
)
def user_stats(user_id: str, query):
    return stat_reads.read_stats(
        store(), actor(), stats.USER, user_id, period=query["period"], **_range(query)
    )


@route(
    "get",
    "/stats/labels/<id:label_id>",
    "One label's counts (incoming messages, cases).",
    query=s.StatsQuery,
    answer=v.StatsView,
)
def label_stats(label_id: str, query):
    return stat_reads.read_stats(
        store(), actor(), stats.LABEL, label_id, period=query["period"], **_range(query)
    )


@route(
    "get",
    "/stats/labels",
    "The labels with the most incoming messages over the range.",
    query=s.StatsQuery,
    answer=v.TopLabel,
    shape="list",
)
def top_labels(query):
    return stat_reads.top_labels(store(), actor(), **_range(query))


@route(
    "get",
    "/stats/activity",
    "Agent activity: per user, replies, cases opened, closed and reassigned, notes, the time "
    "to first reply (median, 90th percentile), last active.",
    "administrators; managers for their partner",
    query=s.ActivityQuery,
    answer=v.ActivityRow,
    shape="list",
)
def activity(query):
    return stat_reads.agent_activity(
        store(), actor(), partner=query.get("partner"), **_range(query)
    )


@route(
    "get",
    "/stats/partners/<id:partner_id>/replies",
    "A partner's 50 newest replies, each with its delay after the message it answers.",
    READERS,
    answer=v.ReplyDelay,
    shape="list",
)
def partner_replies(partner_id: str):
    return stat_reads.partner_replies(store(), actor(), partner_id)

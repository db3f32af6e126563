"""The statistics pages: the org's summary (administrators), a partner's, a label's and a user's
figures, and agent activity. Figures come from the same service layer as ``/api/v1/stats``, with
its checks of who reads what; charts are SVG drawn here (services/cases/ui/charts.py)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, Flask, abort, g, redirect, request, url_for
from marshmallow import ValidationError

from services.cases import stats
from services.cases.domain import Invalid
from services.cases.handlers import org, people, stat_reads
from services.cases.schemas import ActivityQuery
from services.cases.ui import charts, i18n
from services.cases.ui.pages import _, page, protect, store

bp = Blueprint("ui_stats", __name__)
protect(bp)  # signed-in users only, CSRF, private headers: as every page

DAILY_DAYS = 60  # the per-day charts
MONTHS = 12  # the per-month charts
RECENT_DAYS = 30  # the totals and the top labels
SLOW_REPLY = 24 * 3600  # a reply later than this is marked on the partner's page


def register(app: Flask) -> None:
    app.register_blueprint(bp)


def _today() -> date:
    """Today in the org's timezone, read once per request."""
    if "stats_today" not in g:
        timezone = org.get_org(store(), g.signed_in.actor).timezone
        g.stats_today = stat_reads.day_range(timezone, None, None)[1]
    return g.stats_today


def _chart(view, metric: str, ticks: int = 6) -> charts.Chart:
    name = i18n.day_name if view.period == "day" else i18n.month_name
    return charts.bar_chart(
        [(p.start, p.counts.get(metric, 0)) for p in view.periods],
        lambda start: name(start, g.language),
        right_to_left=i18n.direction(g.language) == "rtl",
        ticks=ticks,
    )


def _series(scope: str, scope_id: str | None, *, daily: bool):
    """One scope's figures per day over 60 days, or per month over 12 months."""
    last = _today()
    if daily:
        first, period = last - timedelta(days=DAILY_DAYS - 1), "day"
    else:
        first, period = (last.replace(day=1) - timedelta(days=335)).replace(day=1), "month"
    return stat_reads.read_stats(
        store(), g.signed_in.actor, scope, scope_id, first=first, last=last, period=period
    )


def _recent(scope: str, scope_id: str | None):
    last = _today()
    return stat_reads.read_stats(
        store(),
        g.signed_in.actor,
        scope,
        scope_id,
        first=last - timedelta(days=RECENT_DAYS - 1),
        last=last,
    )


def _helpers() -> dict[str, Any]:
    language = g.language
    return {
        "duration": lambda seconds: i18n.duration(seconds, language),
        "number": lambda value: i18n.number(value, language),
        "day_name": lambda day: i18n.day_name(day, language),
        "totals_of": lambda view: {t.metric: t for t in view.totals},
        "slow": SLOW_REPLY,
    }


@bp.get("/stats")
def summary():
    """Administrators: the org's summary. Others: their partner's figures (or their own)."""
    actor = g.signed_in.actor
    if not actor.is_admin:
        if actor.partner_id:
            return redirect(url_for("ui_stats.partner_figures", partner_id=actor.partner_id))
        return redirect(url_for("ui_stats.user_figures", user_id=actor.user_id))
    daily = _series(stats.ORG, None, daily=True)
    monthly = _series(stats.ORG, None, daily=False)
    return page(
        "stats_org.html",
        recent=_recent(stats.ORG, None),
        daily=daily,
        monthly=monthly,
        incoming=_chart(daily, stats.INCOMING),
        replies=_chart(monthly, stats.REPLIES),
        opened=_chart(monthly, stats.OPENED, ticks=3),  # side by side: half as wide
        closed=_chart(monthly, stats.CLOSED, ticks=3),
        top=stat_reads.top_labels(
            store(), actor, first=_today() - timedelta(days=RECENT_DAYS - 1), last=_today()
        ),
        partners=people.partner_refs(store(), actor),
        **_helpers(),
    )


@bp.get("/stats/partners/<partner_id>")
def partner_figures(partner_id: str):
    actor = g.signed_in.actor
    monthly = _series(stats.PARTNER, partner_id[:64], daily=False)
    users = [u for u in people.list_users(store(), actor, partner_id=monthly.id) if u.active]
    return page(
        "stats_scope.html",
        view=monthly,
        recent=_recent(stats.PARTNER, monthly.id),
        charts=[(_("Replies per month"), _chart(monthly, stats.REPLIES), monthly, stats.REPLIES)],
        replies=stat_reads.partner_replies(store(), actor, monthly.id),
        users=users,
        **_helpers(),
    )


@bp.get("/stats/labels/<label_id>")
def label_figures(label_id: str):
    daily = _series(stats.LABEL, label_id[:64], daily=True)
    return page(
        "stats_scope.html",
        view=daily,
        recent=_recent(stats.LABEL, daily.id),
        charts=[
            (_("Incoming messages per day"), _chart(daily, stats.INCOMING), daily, stats.INCOMING)
        ],
        **_helpers(),
    )


@bp.get("/stats/users/<user_id>")
def user_figures(user_id: str):
    monthly = _series(stats.USER, user_id[:64], daily=False)
    return page(
        "stats_scope.html",
        view=monthly,
        recent=_recent(stats.USER, monthly.id),
        charts=[(_("Replies per month"), _chart(monthly, stats.REPLIES), monthly, stats.REPLIES)],
        **_helpers(),
    )


SORTS = (
    "name",
    "replies",
    "cases_opened",
    "cases_closed",
    "reassigned",
    "notes",
    "first_reply_median_seconds",
    "first_reply_p90_seconds",
    "last_active",
)


ACTIVITY_PAGE = 50  # users a page of agent activity shows


@bp.get("/stats/activity")
def activity():
    """Agent activity over a range of days, sortable by any column."""
    actor = g.signed_in.actor
    if not actor.is_admin and actor.role != "manager":
        abort(404)
    try:
        query = ActivityQuery().load(
            {k: v for k, v in request.args.items() if k in ("from", "to", "partner") and v}
        )
    except ValidationError:
        query = {}
    first, last = query.get("start"), query.get("end")
    try:
        rows = stat_reads.agent_activity(
            store(), actor, first=first, last=last, partner=query.get("partner")
        )
    except Invalid:
        return redirect(url_for("ui_stats.activity"))
    sort = request.args.get("sort", "name")
    sort = sort if sort in SORTS else "name"
    descending = request.args.get("order") == "desc"

    def key(row):
        value = row.user.name.lower() if sort == "name" else getattr(row, sort)
        return (value is None, value if value is not None else 0)

    rows.sort(key=key, reverse=descending)
    if descending:  # the unknown values last either way
        rows.sort(key=lambda row: sort != "name" and getattr(row, sort) is None)
    # A page of rows at a time (an org has hundreds of users; the export holds them all).
    pages = max(1, -(-len(rows) // ACTIVITY_PAGE))
    asked = request.args.get("page", "1")
    page_number = min(int(asked), pages) if asked.isdigit() and int(asked) > 0 else 1
    start = (page_number - 1) * ACTIVITY_PAGE
    timezone = org.get_org(store(), actor).timezone
    shown_first, shown_last = stat_reads.day_range(timezone, first, last)
    return page(
        "stats_activity.html",
        rows=rows[start : start + ACTIVITY_PAGE],
        shown=(start + 1, min(start + ACTIVITY_PAGE, len(rows)), len(rows)),
        page_number=page_number,
        pages=pages,
        sort=sort,
        descending=descending,
        first=shown_first,
        last=shown_last,
        partner=query.get("partner"),
        partners=people.partner_refs(store(), actor) if actor.is_admin else [],
        when=lambda moment: i18n.when(moment, g.language, timezone),
        **_helpers(),
    )

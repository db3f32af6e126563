"""Reading statistics: one scope's counts over a range of days (per day or per month), the top
labels, and agent activity. Who may read what: administrators everything; a partner's users
their partner and its users' figures (managers) or their own (agents); labels as they see them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select, tuple_
from sqlalchemy.orm import Session

from services.cases import stats
from services.cases.domain import MANAGER, Actor, Forbidden, Invalid, NotFound
from services.cases.handlers.rows import ensure_org
from services.cases.models import Label, Message, Outgoing, Partner, StatCount, StatFact, User
from services.cases.views import (
    ActivityRow,
    Ref,
    ReplyDelay,
    StatPeriod,
    StatsView,
    StatTotal,
    TopLabel,
)
from shared.db import utcnow
from shared.uow import ServiceStore

MAX_DAYS = 400  # a range longer than this is refused (a year and a bit)
DEFAULT_DAYS = 30


def day_range(timezone: str, first: date | None, last: date | None) -> tuple[date, date]:
    """The range asked for, or the last 30 days up to today in the org's timezone."""
    today = stats.day_of(utcnow(), timezone)
    last = last or today
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if (last - first).days >= MAX_DAYS:
        raise Invalid({"from": [f"A range is at most {MAX_DAYS} days."]})
    return first, last


def read_stats(
    store: ServiceStore,
    actor: Actor,
    scope: str,
    scope_id: str | None = None,
    *,
    first: date | None = None,
    last: date | None = None,
    period: str = "day",
) -> StatsView:
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        name = _check_scope(session, actor, scope, scope_id) or org.name
        first, last = day_range(org.timezone, first, last)
        rows = session.execute(
            select(StatCount.day, StatCount.metric, StatCount.n, StatCount.seconds).where(
                StatCount.org == actor.org,
                StatCount.scope == scope,
                StatCount.scope_id == (scope_id or ""),
                StatCount.day >= first,
                StatCount.day <= last,
            )
        ).all()
    starts = _period_starts(first, last, period)
    counts: dict[date, dict[str, int]] = {start: defaultdict(int) for start in starts}
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for day, metric, n, seconds in rows:
        counts[_period_of(day, period)][metric] += n
        totals[metric][0] += n
        totals[metric][1] += seconds
    return StatsView(
        scope=scope,
        id=scope_id,
        name=name,
        first=first,
        last=last,
        period=period,
        timezone=org.timezone,
        totals=[
            StatTotal(
                metric,
                int(totals[metric][0]),
                round(totals[metric][1] / totals[metric][0])
                if metric in stats.DURATIONS and totals[metric][0]
                else None,
            )
            for metric in stats.METRICS
        ],
        periods=[StatPeriod(start, dict(counts[start])) for start in starts],
    )


def _check_scope(session, actor: Actor, scope: str, scope_id: str | None) -> str | None:
    """The scope's name, once the actor may read it (NotFound for what they may not see)."""
    if scope == stats.ORG:
        if not actor.is_admin:
            raise Forbidden("Only administrators read the org's statistics.")
        return None
    if scope == stats.PARTNER:
        partner = session.get(Partner, scope_id)
        if partner is None or partner.org != actor.org:
            raise NotFound("partner")
        if not actor.is_admin and actor.partner_id != partner.id:
            raise NotFound("partner")
        return partner.name
    if scope == stats.USER:
        user = session.get(User, scope_id)
        if user is None or user.org != actor.org or not _reads_user(actor, user):
            raise NotFound("user")
        return user.name
    label = session.get(Label, scope_id)
    if (
        label is None
        or label.org != actor.org
        or label.deleted_at is not None
        or not actor.sees_label(label.id)
    ):
        raise NotFound("label")
    return label.name


def _reads_user(actor: Actor, user: User) -> bool:
    """Administrators read everyone's figures, managers their partner's users', agents their
    own."""
    if actor.is_admin or actor.user_id == user.id:
        return True
    return (
        actor.role == MANAGER
        and user.partner_id is not None
        and user.partner_id == actor.partner_id
    )


def _period_starts(first: date, last: date, period: str) -> list[date]:
    if period == "day":
        return list(stats.days_between(first, last))
    starts, month = [], first.replace(day=1)
    while month <= last:
        starts.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    return starts


def _period_of(day: date, period: str) -> date:
    return day if period == "day" else day.replace(day=1)


def top_labels(
    store: ServiceStore,
    actor: Actor,
    *,
    first: date | None = None,
    last: date | None = None,
    limit: int = 10,
) -> list[TopLabel]:
    """The labels with the most incoming messages over the range, among those the actor sees."""
    with store.unit_of_work() as uow:
        session = uow.session
        org = ensure_org(session, actor.org)
        first, last = day_range(org.timezone, first, last)
        rows = session.execute(
            select(StatCount.scope_id, func.sum(StatCount.n).label("n"), Label.name)
            .join(Label, Label.id == StatCount.scope_id)
            .where(
                StatCount.org == actor.org,
                StatCount.scope == stats.LABEL,
                StatCount.metric == stats.INCOMING,
                StatCount.day >= first,
                StatCount.day <= last,
                Label.deleted_at.is_(None),
            )
            .group_by(StatCount.scope_id, Label.name)
            .order_by(func.sum(StatCount.n).desc(), Label.name)
        ).all()
    visible = [
        TopLabel(Ref(r.scope_id, r.name), int(r.n)) for r in rows if actor.sees_label(r.scope_id)
    ]
    return visible[:limit]


ACTIVITY = {
    stats.REPLIES: "replies",
    stats.OPENED: "cases_opened",
    stats.CLOSED: "cases_closed",
    stats.REASSIGNED: "reassigned",
    stats.NOTES: "notes",
}


def agent_activity(
    store: ServiceStore,
    actor: Actor,
    *,
    first: date | None = None,
    last: date | None = None,
    partner: str | None = None,
) -> list[ActivityRow]:
    """Per user over the range: replies, cases opened, closed and reassigned, notes, the median
    and 90th percentile of their partner's time to first reply when they gave it, and when they
    last did any of that. Administrators: everyone (or one partner's users); managers: their
    partner's users."""
    with store.unit_of_work() as uow:
        return activity_rows(uow.session, actor, first=first, last=last, partner=partner)


def activity_rows(
    session: Session,
    actor: Actor,
    *,
    first: date | None = None,
    last: date | None = None,
    partner: str | None = None,
) -> list[ActivityRow]:
    """``agent_activity`` in a session of the caller's (the activity export reads it too)."""
    if not actor.is_admin and actor.role != MANAGER:
        raise Forbidden("Only administrators and partner managers read agent activity.")
    org = ensure_org(session, actor.org)
    first, last = day_range(org.timezone, first, last)
    if not actor.is_admin:
        partner = actor.partner_id
    whose = [User.org == actor.org, *([User.partner_id == partner] if partner else [])]
    # Columns, not User objects: 500 ORM instances cost more than all three queries below.
    people = select(User.id, User.name, User.partner_id).where(*whose)
    users = {u.id: u for u in session.execute(people.order_by(User.name, User.id))}
    partners = dict(
        session.execute(select(Partner.id, Partner.name).where(Partner.org == actor.org)).all()
    )
    # One partner's users: their ids, on the primary key; everyone: the range on
    # ix_stat_counts_day, which covers it on PostgreSQL (bench/stats.py: a scan of every count
    # row before, then 7,700 scattered table pages at a year's size).
    chosen = [StatCount.scope_id.in_(list(users))] if partner is not None else []
    # One row per user with a column per metric: the database adds up, Python reads 500 rows
    # rather than 2,500.
    sums = {
        row[0]: row[1:]
        for row in session.execute(
            select(
                StatCount.scope_id,
                *(
                    func.sum(case((StatCount.metric == metric, StatCount.n), else_=0))
                    for metric in ACTIVITY
                ),
            )
            .where(
                StatCount.org == actor.org,
                StatCount.scope == stats.USER,
                StatCount.day >= first,
                StatCount.day <= last,
                StatCount.metric.in_(list(ACTIVITY)),
                *chosen,
            )
            .group_by(StatCount.scope_id)
        )
    }
    start, end = _bounds(first, last, org.timezone)
    delays: dict[str, list[float]] = defaultdict(list)
    for user_id, seconds in session.execute(
        select(StatFact.user_id, StatFact.seconds).where(
            StatFact.org == actor.org,
            StatFact.metric == stats.PARTNER_FIRST_REPLY,
            StatFact.at >= start,
            StatFact.at < end,
            *([StatFact.user_id.in_(list(users))] if partner is not None else []),
        )
    ):
        delays[user_id].append(seconds)
    # Each user's newest fact: one short reverse walk of ix_stat_facts_user per user (a
    # grouping read every fact of every user).
    newest = (
        select(func.max(StatFact.at))
        .where(StatFact.org == actor.org, StatFact.user_id == User.id)
        .scalar_subquery()
    )
    last_active = dict(session.execute(select(User.id, newest).where(*whose)).all())
    nothing = (0,) * len(ACTIVITY)
    rows = []
    for user in users.values():
        counts = zip(ACTIVITY.values(), sums.get(user.id, nothing), strict=True)
        waits = delays.get(user.id)
        rows.append(
            ActivityRow(
                user=Ref(user.id, user.name),
                partner=Ref(user.partner_id, partners[user.partner_id])
                if user.partner_id
                else None,
                **{field: int(n) for field, n in counts},
                first_reply_median_seconds=_whole(stats.percentile(waits, 0.5)) if waits else None,
                first_reply_p90_seconds=_whole(stats.percentile(waits, 0.9)) if waits else None,
                last_active=last_active.get(user.id),
            )
        )
    return rows


def _bounds(first: date, last: date, timezone: str) -> tuple[datetime, datetime]:
    """The instants that bound whole days ``first`` to ``last`` in the org's timezone."""
    zone = ZoneInfo(timezone)
    return (
        datetime.combine(first, time(), zone),
        datetime.combine(last + timedelta(days=1), time(), zone),
    )


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds)


def partner_replies(
    store: ServiceStore, actor: Actor, partner_id: str, *, limit: int = 50
) -> list[ReplyDelay]:
    """A partner's newest replies, each with the time since the message it answers."""
    with store.unit_of_work() as uow:
        session = uow.session
        _check_scope(session, actor, stats.PARTNER, partner_id)
        rows = session.execute(
            select(Outgoing, Message.received_at, User.name)
            .outerjoin(Message, Message.id == Outgoing.reply_to)
            .outerjoin(User, User.id == Outgoing.user_id)
            .where(Outgoing.org == actor.org, Outgoing.partner_id == partner_id)
            .order_by(Outgoing.created_at.desc(), Outgoing.id.desc())
            .limit(limit)
        ).all()
        return [
            ReplyDelay(
                id=reply.id,
                at=reply.created_at,
                by=Ref(reply.user_id, name) if name else None,
                case=reply.case_id,
                delay_seconds=round((reply.created_at - received).total_seconds())
                if received is not None
                else None,
            )
            for reply, received, name in rows
        ]


def daily_rows(
    session: Session,
    actor: Actor,
    scope: str,
    scope_id: str | None,
    first: date | None,
    last: date | None,
    after: tuple[date, str] | None,
    size: int,
) -> list[tuple[date, str, int, float]]:
    """The daily counts export's rows: (day, metric, count, seconds), in day and metric order,
    after the key ``after``; the reader may read the scope (NotFound otherwise)."""
    _check_scope(session, actor, scope, scope_id)
    org = ensure_org(session, actor.org)
    first, last = day_range(org.timezone, first, last)
    query = select(StatCount.day, StatCount.metric, StatCount.n, StatCount.seconds).where(
        StatCount.org == actor.org,
        StatCount.scope == scope,
        StatCount.scope_id == (scope_id or ""),
        StatCount.day >= first,
        StatCount.day <= last,
    )
    if after is not None:
        query = query.where(tuple_(StatCount.day, StatCount.metric) > tuple_(*after))
    rows = session.execute(query.order_by(StatCount.day, StatCount.metric).limit(size))
    return [(day, metric, n, seconds) for day, metric, n, seconds in rows]

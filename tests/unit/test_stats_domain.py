"""The pure part of statistics: facts of a case's clock, days in the org's timezone, percentiles."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from services.cases import stats


def at(hours: float) -> datetime:
    return datetime(2026, 11, 20, 12, 0, tzinfo=UTC) + timedelta(hours=hours)


def by_metric(facts):
    return {f.metric: f for f in facts}


def test_first_reply_for_the_org_and_for_the_partner():
    clock = stats.CaseClock()
    opened = stats.case_opened(clock, "a1", at(0), "helpline", "admin", False, ["violence"])
    assert [f.metric for f in opened] == [stats.OPENED]
    assert opened[0].labels == ("violence",) and opened[0].partner == "helpline"
    facts = by_metric(stats.case_replied(clock, "o1", at(2), "helpline", "ana"))
    assert facts[stats.FIRST_REPLY].seconds == 2 * 3600
    assert facts[stats.PARTNER_FIRST_REPLY].seconds == 2 * 3600
    assert facts[stats.PARTNER_FIRST_REPLY].user == "ana"
    # Later replies measure nothing more.
    assert stats.case_replied(clock, "o2", at(3), "helpline", "ana") == []


def test_a_reassignment_starts_the_new_partners_clock():
    clock = stats.CaseClock()
    stats.case_opened(clock, "a1", at(0), "helpline", "admin", False, [])
    stats.case_replied(clock, "o1", at(1), "helpline", "ana")
    stats.case_reassigned(clock, "a2", at(5), "school", "admin", False)
    # A reply of the old partner is not the new one's first reply.
    assert stats.case_replied(clock, "o2", at(6), "helpline", "ana") == []
    [fact] = stats.case_replied(clock, "o3", at(8), "school", "bia")
    assert fact.metric == stats.PARTNER_FIRST_REPLY and fact.seconds == 3 * 3600
    assert fact.key == "pfr:a2" and fact.partner == "school"


def test_self_assigned_cases_measure_no_partner_first_reply():
    clock = stats.CaseClock()
    stats.case_opened(clock, "a1", at(0), "helpline", "ana", True, [])
    facts = stats.case_replied(clock, "o1", at(1), "helpline", "ana")
    assert [f.metric for f in facts] == [stats.FIRST_REPLY]  # the org's still counts


def test_time_to_close_runs_from_the_latest_assignment_and_reopening_restarts_it():
    clock = stats.CaseClock()
    stats.case_opened(clock, "a1", at(0), "helpline", "admin", False, [])
    stats.case_reassigned(clock, "a2", at(4), "school", "admin", False)
    facts = by_metric(stats.case_closed(clock, "a3", at(10), "school", "bia", ["x"]))
    assert facts[stats.TIME_TO_CLOSE].seconds == 6 * 3600
    assert facts[stats.CLOSED].labels == ("x",)
    stats.case_reopened(clock, "a4", at(20), "school")
    again = by_metric(stats.case_closed(clock, "a5", at(21), "school", "bia", []))
    assert again[stats.TIME_TO_CLOSE].seconds == 3600
    assert again[stats.CLOSED].key == "cl:a5"  # every close counts


def test_the_clock_survives_json():
    clock = stats.CaseClock()
    stats.case_opened(clock, "a1", at(0), "helpline", "admin", False, [])
    copy = stats.CaseClock.from_json(clock.to_json())
    assert copy == clock
    assert stats.CaseClock.from_json(None) == stats.CaseClock()


def test_a_fact_counts_on_the_orgs_day_and_in_each_of_its_scopes():
    late = datetime(2026, 11, 21, 1, 30, tzinfo=UTC)  # 20 November, 22:30 in São Paulo
    fact = stats.Fact("re:1", stats.REPLIES, late, partner="helpline", user="ana")
    rows = stats.increments(fact, "America/Sao_Paulo")
    assert {(r.scope, r.scope_id) for r in rows} == {
        ("org", ""),
        ("partner", "helpline"),
        ("user", "ana"),
    }
    assert {r.day for r in rows} == {date(2026, 11, 20)}
    assert {r.day for r in stats.increments(fact, "UTC")} == {date(2026, 11, 21)}
    labelled = stats.labelled("m1", "violence", late)
    # The org counted the message when it came; its labels count it when it gets them.
    assert [(r.scope, r.scope_id) for r in stats.increments(labelled, "UTC")] == [
        ("label", "violence")
    ]


def test_percentiles():
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([4.0], 0.9) == 4.0
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert stats.percentile([10.0, 0.0, 5.0], 0.9) == 9.0

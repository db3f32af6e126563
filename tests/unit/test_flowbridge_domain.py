"""flowbridge's pure rules: version convergence, groups to take and give back, follow-up."""

from datetime import UTC, datetime

import pytest

from services.flowbridge import domain
from services.flowbridge.domain import OrgPolicy, Restoration, Suspension

BOT, SMART, OTHER = "g-bot", "g-smart", "g-other"


@pytest.mark.parametrize(
    ("known", "incoming", "newer"),
    [(None, 1, True), (1, 2, True), (2, 2, False), (3, 2, False), (None, 7, True)],
)
def test_only_a_newer_version_applies(known, incoming, newer):
    assert domain.is_newer(known, incoming) is newer


def test_suspension_takes_the_suspend_groups_the_contact_is_in_and_skips_smart_ones():
    plan = domain.plan_suspension([BOT, SMART, OTHER, BOT], [SMART, BOT, "g-elsewhere"], [SMART])
    assert plan == Suspension(remove=(BOT,), skipped=(SMART,))


def test_suspension_of_a_contact_in_no_suspend_group_is_empty():
    assert domain.plan_suspension([BOT], [OTHER], []) == Suspension((), ())


def test_restoration_gives_back_exactly_the_removed_groups():
    plan = domain.plan_restoration("c1", "c1", [BOT, OTHER], "active")
    assert plan == Restoration((BOT, OTHER), None, releases=True)


@pytest.mark.parametrize("status", ["blocked", "stopped", "archived"])
def test_an_inactive_contact_is_not_restored_but_the_record_is_released(status):
    plan = domain.plan_restoration("c1", "c1", [BOT], status)
    assert plan == Restoration((), f"contact_{status}", releases=True, still_owed=())


def test_a_contact_gone_from_the_engine_is_not_restored():
    assert domain.plan_restoration("c1", "c1", [BOT], None) == Restoration(
        (), domain.CONTACT_NOT_FOUND, releases=True
    )


def test_a_close_seen_before_its_open_restores_nothing_and_releases():
    assert domain.plan_restoration("c1", None, [], None) == Restoration((), None, releases=True)


def test_a_close_while_another_case_holds_the_contact_leaves_it_suspended():
    plan = domain.plan_restoration("c1", "c2", [BOT], "active")
    assert plan == Restoration((), domain.ANOTHER_CASE_OPEN, releases=False, still_owed=(BOT,))


def test_a_close_that_cannot_reach_the_engine_keeps_the_groups_owed():
    plan = domain.plan_restoration("c1", "c1", [BOT], None, domain.CONFIGURATION)
    assert plan == Restoration((), domain.CONFIGURATION, releases=True, still_owed=(BOT,))


@pytest.mark.parametrize(
    ("flow", "every_close", "first_close", "wanted"),
    [
        ("f", False, True, True),
        ("f", False, False, False),  # CasePro: not after a reopen
        ("f", True, False, True),
        (None, True, True, False),
    ],
)
def test_followup_on_first_close_unless_the_org_wants_every_close(
    flow, every_close, first_close, wanted
):
    policy = OrgPolicy(followup_flow=flow, followup_every_close=every_close)
    assert domain.wants_followup(policy, first_close) is wanted


def test_followup_params_are_caseros_plus_the_close_time():
    params = domain.followup_params(
        "case-9",
        {"id": "p-1", "name": "Helpline", "extra": "ignored"},
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 3, 0, 0, tzinfo=UTC),
    )
    assert params == {
        "case": {
            "id": "case-9",
            "assignee": {"id": "p-1", "name": "Helpline"},
            "opened_on": "2026-01-02T03:04:05+00:00",
            "closed_on": "2026-01-03T00:00:00+00:00",
        }
    }


def test_merged_keeps_order_without_repeats():
    assert domain.merged([BOT, OTHER], [OTHER, SMART, BOT]) == [BOT, OTHER, SMART]


def test_token_fingerprint_does_not_reveal_the_token():
    token = "secret-token-123456"
    fingerprint = domain.token_fingerprint(token)
    assert len(fingerprint) == 12 and fingerprint not in token
    assert fingerprint == domain.token_fingerprint(token)

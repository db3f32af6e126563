"""Reading statistics through the API: ranges in the org's days, per day or month, who may read
which scope, the top labels, and agent activity (embedded default)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.unit.test_stats import helpline


def stats_of(world, person, path, **query):
    return world.ok(world.get(person, f"/api/v1/stats/{path}", **query))


def totals(view):
    return {t["metric"]: t for t in view["totals"]}


def test_the_org_summary_per_day_and_per_month(world):
    world.message([], received_at=datetime(2026, 10, 30, 12, tzinfo=UTC))
    world.message([], received_at=datetime(2026, 11, 2, 12, tzinfo=UTC))
    world.message([], received_at=datetime(2026, 11, 2, 13, tzinfo=UTC))
    daily = stats_of(world, world.admin, "org", **{"from": "2026-11-01", "to": "2026-11-03"})
    assert [p["start"] for p in daily["periods"]] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert [p["counts"].get("incoming", 0) for p in daily["periods"]] == [0, 2, 0]
    assert totals(daily)["incoming"]["count"] == 2
    monthly = stats_of(
        world, world.admin, "org", **{"from": "2026-10-01", "to": "2026-11-30", "period": "month"}
    )
    assert [(p["start"], p["counts"]["incoming"]) for p in monthly["periods"]] == [
        ("2026-10-01", 1),
        ("2026-11-01", 2),
    ]


def test_ranges_are_checked(world):
    too_long = world.get(
        world.admin, "/api/v1/stats/org", **{"from": "2025-01-01", "to": "2026-12-01"}
    )
    assert too_long.status_code == 422
    backwards = world.get(
        world.admin, "/api/v1/stats/org", **{"from": "2026-12-01", "to": "2026-11-01"}
    )
    assert backwards.status_code == 400
    assert world.get(world.admin, "/api/v1/stats/org", period="week").status_code == 400
    default = stats_of(world, world.admin, "org")
    assert len(default["periods"]) == 30


def test_who_reads_which_figures(world):
    h = helpline(world)
    manager = world.user(h["partner"], role="manager", name="Mara")
    assert world.get(h["agent"], "/api/v1/stats/org").status_code == 403
    assert stats_of(world, h["agent"], f"partners/{h['partner']}")["name"] == "Helpline"
    assert world.get(h["agent"], f"/api/v1/stats/partners/{h['other']}").status_code == 404
    assert stats_of(world, h["agent"], f"users/{h['agent'].id}")["name"] == "Ana"
    assert world.get(h["agent"], f"/api/v1/stats/users/{manager.id}").status_code == 404
    assert stats_of(world, manager, f"users/{h['agent'].id}")["name"] == "Ana"
    assert world.get(manager, f"/api/v1/stats/users/{h['teacher'].id}").status_code == 404
    hidden = world.label("hidden")
    assert world.get(h["agent"], f"/api/v1/stats/labels/{hidden}").status_code == 404
    assert stats_of(world, h["agent"], f"labels/{h['label']}")["name"] == "violence"
    assert world.get(h["agent"], "/api/v1/stats/activity").status_code == 403
    rows = world.ok(world.get(manager, "/api/v1/stats/activity"))["items"]
    assert {r["user"]["name"] for r in rows} == {"Ana", "Mara"}  # their partner's users only


def test_top_labels_among_those_the_reader_sees(world):
    h = helpline(world)
    hidden = world.label("hidden")
    for _ in range(3):
        world.message([hidden])
    world.message([h["label"]])
    everyone = world.ok(world.get(world.admin, "/api/v1/stats/labels"))["items"]
    assert [(t["label"]["name"], t["count"]) for t in everyone] == [("hidden", 3), ("violence", 1)]
    mine = world.ok(world.get(h["agent"], "/api/v1/stats/labels"))["items"]
    assert [t["label"]["name"] for t in mine] == ["violence"]


def test_agent_activity(world):
    h = helpline(world)
    for text in ("um", "dois"):
        message = world.message([h["label"]], text=text)
        case = world.open_case(world.admin, message, h["partner"])
        path = f"/api/v1/cases/{case['id']}"
        world.ok(world.post(h["agent"], f"{path}/reply", {"text": "Olá"}), 201)
        world.ok(world.post(h["agent"], f"{path}/notes", {"note": "n"}), 201)
        world.ok(world.post(h["agent"], f"{path}/close", {"note": "done"}))
    rows = world.ok(world.get(world.admin, "/api/v1/stats/activity"))["items"]
    ana = next(r for r in rows if r["user"]["name"] == "Ana")
    assert (ana["replies"], ana["notes"], ana["cases_closed"], ana["cases_opened"]) == (2, 2, 2, 0)
    assert ana["partner"]["name"] == "Helpline"
    assert ana["first_reply_median_seconds"] is not None and ana["last_active"]
    admin = next(r for r in rows if r["user"]["id"] == world.admin.id)
    assert admin["cases_opened"] == 2 and admin["first_reply_median_seconds"] is None
    teo = next(r for r in rows if r["user"]["name"] == "Teo")
    assert teo["replies"] == 0 and teo["last_active"] is None
    only = world.ok(world.get(world.admin, "/api/v1/stats/activity", partner=h["other"]))["items"]
    assert [r["user"]["name"] for r in only] == ["Teo"]


def test_a_partners_replies_with_their_delay(world):
    h = helpline(world)
    message = world.message([h["label"]], received_at=datetime(2026, 11, 1, 12, tzinfo=UTC))
    world.ok(world.post(h["agent"], f"/api/v1/messages/{message}/reply", {"text": "Oi"}), 201)
    [reply] = world.ok(world.get(h["agent"], f"/api/v1/stats/partners/{h['partner']}/replies"))[
        "items"
    ]
    assert reply["by"]["name"] == "Ana" and reply["case"] is None
    assert reply["delay_seconds"] > 30 * 86400  # written today, a month and more after
    other = world.get(h["agent"], f"/api/v1/stats/partners/{h['other']}/replies")
    assert other.status_code == 404

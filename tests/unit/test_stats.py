"""Statistics kept from what happens, in its transaction: counted by hand on small histories, and
equal to a rebuild from history after a long random one (embedded default; the PostgreSQL twin
is tests/integration/test_stats_postgres.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sqlalchemy import delete, select

from services.cases import stats
from services.cases.handlers import statistics
from services.cases.models import CaseAction, Outgoing, StatCount, StatFact
from services.cli import main as cli_main
from tests.cases_helpers import message_labeled, message_received


def counts(world) -> dict[tuple, tuple[int, float]]:
    """Every daily count row, with its seconds rounded (floats summed in another order)."""
    with world.store.unit_of_work() as uow:
        rows = uow.session.scalars(select(StatCount)).all()
        return {
            (r.org, r.day, r.scope, r.scope_id, r.metric): (r.n, round(r.seconds, 3))
            for r in rows
            if r.n or round(r.seconds, 3)
        }


def totals(world, metric, scope="org", scope_id=""):
    return sum(
        n
        for (_o, _d, sc, sid, m), (n, _s) in counts(world).items()
        if m == metric and sc == scope and sid == scope_id
    )


def helpline(world):
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    other = world.partner("School")
    return {
        "label": label,
        "partner": partner,
        "other": other,
        "agent": world.user(partner, name="Ana"),
        "teacher": world.user(other, name="Teo"),
    }


def test_a_small_history_counted_by_hand(world):
    h = helpline(world)
    first = world.message([h["label"]], text="um")
    world.message([], text="dois")
    world.message([h["label"]], text="simulated", simulation=True)
    assert totals(world, stats.INCOMING) == 2  # the simulation is not counted
    assert totals(world, stats.INCOMING, "label", h["label"]) == 1
    # The admin opens a case for the helpline: not self-assigned, the partner's clock runs.
    case = world.open_case(world.admin, first, h["partner"])
    path = f"/api/v1/cases/{case['id']}"
    world.ok(world.post(h["agent"], f"{path}/reply", {"text": "Olá"}), 201)
    world.ok(world.post(h["agent"], f"{path}/reply", {"text": "Ainda aí?"}), 201)
    world.ok(world.post(h["agent"], f"{path}/notes", {"note": "called the school"}), 201)
    world.ok(world.post(world.admin, f"{path}/reassign", {"partner": h["other"]}))
    world.ok(world.post(h["teacher"], f"{path}/reply", {"text": "Sou da escola"}), 201)
    world.ok(world.post(h["teacher"], f"{path}/close", {"note": "done"}))
    assert totals(world, stats.OPENED) == 1 and totals(world, stats.CLOSED) == 1
    assert totals(world, stats.OPENED, "partner", h["partner"]) == 1
    assert totals(world, stats.CLOSED, "partner", h["other"]) == 1
    assert totals(world, stats.OPENED, "label", h["label"]) == 1  # the message's label
    assert totals(world, stats.REPLIES) == 3
    assert totals(world, stats.NOTES, "user", h["agent"].id) == 1
    assert totals(world, stats.REASSIGNED, "partner", h["other"]) == 1
    assert totals(world, stats.REASSIGNED, "user", world.admin.id) == 1
    assert totals(world, stats.REPLIES, "user", h["agent"].id) == 2
    assert totals(world, stats.FIRST_REPLY) == 1  # the org's: one per case
    # Each partner's first reply after its assignment: the helpline's and the school's.
    assert totals(world, stats.PARTNER_FIRST_REPLY, "partner", h["partner"]) == 1
    assert totals(world, stats.PARTNER_FIRST_REPLY, "partner", h["other"]) == 1
    assert totals(world, stats.TIME_TO_CLOSE, "partner", h["other"]) == 1
    with world.store.unit_of_work() as uow:
        session = uow.session
        actions = {
            a.kind: a.created_at
            for a in session.scalars(select(CaseAction).where(CaseAction.case_id == case["id"]))
        }
        replies = sorted(session.scalars(select(Outgoing.created_at)).all())
        facts = {f.metric: f for f in session.scalars(select(StatFact))}
    # The seconds measured are those between the rows' own times.
    first_reply = facts[stats.FIRST_REPLY].seconds
    assert first_reply == (replies[0] - actions["open"]).total_seconds()
    time_to_close = facts[stats.TIME_TO_CLOSE].seconds
    assert time_to_close == (actions["close"] - actions["reassign"]).total_seconds()


def test_a_case_a_partner_opens_for_itself_waits_for_no_partner_first_reply(world):
    h = helpline(world)
    message = world.message([h["label"]])
    case = world.open_case(h["agent"], message, h["partner"], reply="Estou aqui")
    assert totals(world, stats.REPLIES) == 1 and totals(world, stats.FIRST_REPLY) == 1
    assert totals(world, stats.PARTNER_FIRST_REPLY, "partner", h["partner"]) == 0
    assert case["state"] == "open"


def test_label_counts_follow_the_labels_and_a_redelivered_event_counts_nothing(world):
    h = helpline(world)
    received = message_received(text="late label")
    labeled = message_labeled(received, [h["label"]])
    world.deliver(labeled)  # the labeler was quicker than the message itself
    assert totals(world, stats.INCOMING, "label", h["label"]) == 0
    world.deliver(received)
    world.deliver(received)  # again: the inbox and the fact's key both say "seen"
    assert totals(world, stats.INCOMING) == 1
    assert totals(world, stats.INCOMING, "label", h["label"]) == 1
    message = received.data["message_id"]
    world.ok(
        world.post(
            world.admin,
            "/api/v1/messages/actions",
            {"messages": [message], "action": "unlabel", "label": h["label"]},
        )
    )
    assert totals(world, stats.INCOMING, "label", h["label"]) == 0
    world.ok(world.call(world.admin, "DELETE", f"/api/v1/labels/{h['label']}"), 204)
    assert all(sid != h["label"] for (_o, _d, _s, sid, _m) in counts(world))


def test_days_are_the_orgs(world):
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"timezone": "America/Sao_Paulo"}))
    world.message([], received_at=datetime(2026, 11, 21, 1, 0, tzinfo=UTC))
    [day] = {key[1] for key in counts(world)}
    assert day.isoformat() == "2026-11-20"


def test_live_counts_equal_a_rebuild_after_a_random_history(world):
    random_history(world, random.Random(7), steps=120)
    live = counts(world)
    assert {key[4] for key in live} == set(stats.METRICS), "the history has every kind of fact"
    statistics.rebuild(world.store)
    assert counts(world) == live


def random_history(world, rng: random.Random, steps: int) -> None:
    """Messages (some labelled late, some simulated), labels put on and taken off, cases opened
    by admins and by partners for themselves, replies, reassignments, closes, reopens, and a
    label deleted midway."""
    h = helpline(world)
    spare = world.label("spare")
    labels = [h["label"], spare]
    people = {h["partner"]: h["agent"], h["other"]: h["teacher"]}
    messages: list[str] = []
    cases: list[dict] = []
    for step in range(steps):
        roll = rng.random()
        if roll < 0.3 or not messages:
            received = message_received(simulation=rng.random() < 0.1)
            chosen = rng.sample(labels, rng.randint(0, len(labels)))
            if rng.random() < 0.2:
                world.deliver(message_labeled(received, chosen))
                world.deliver(received)
            else:
                world.deliver(received)
                world.deliver(message_labeled(received, chosen))
            messages.append(received.data["message_id"])
        elif roll < 0.4:
            message = rng.choice(messages)
            carried = [
                label["id"]
                for label in world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))[
                    "labels"
                ]
            ]
            action = "unlabel" if carried and rng.random() < 0.5 else "label"
            label = rng.choice(carried if action == "unlabel" else labels)
            body = {"messages": [message], "action": action, "label": label}
            world.ok(world.post(world.admin, "/api/v1/messages/actions", body))
        elif roll < 0.55:
            partner = rng.choice(list(people))
            opener = rng.choice([world.admin, people[partner]])
            body = {"summary": "s", "partner": partner, "message": rng.choice(messages)}
            if rng.random() < 0.5:
                body["reply"] = "first"
            answer = world.post(opener, "/api/v1/cases", body)
            if answer.status_code in (200, 201):
                cases.append(answer.get_json())
        elif cases:
            case = rng.choice(cases)
            path = f"/api/v1/cases/{case['id']}"
            partner = rng.choice(list(people))
            doer = rng.choice([world.admin, *people.values()])
            what = rng.random()
            if what < 0.3:
                world.post(doer, f"{path}/reply", {"text": "r"})
            elif what < 0.4:
                world.post(doer, f"{path}/notes", {"note": "n"})
            elif what < 0.6:
                world.post(world.admin, f"{path}/reassign", {"partner": partner})
            elif what < 0.8:
                world.post(world.admin, f"{path}/close", {"note": "n"})
            else:
                world.post(world.admin, f"{path}/reopen", {})
        if step == steps // 2:
            world.ok(world.call(world.admin, "DELETE", f"/api/v1/labels/{spare}"), 204)
            labels.remove(spare)


def test_operators_rebuild_the_statistics_from_the_command_line(world, settings, monkeypatch):
    random_history(world, random.Random(3), steps=40)
    live = counts(world)
    with world.store.unit_of_work() as uow:  # as if the statistics were lost
        uow.session.execute(delete(StatCount))
        uow.session.execute(delete(StatFact))
        uow.session.commit()
    assert counts(world) == {}
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("UPARTNERS_DATABASE_URL", raising=False)
    assert cli_main(["cases", "rebuild-stats"]) == 0
    assert counts(world) == live

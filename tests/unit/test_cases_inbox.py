"""The inbox: messages from message.received + message.labeled, folders, filters, paging,
counts, actions, replies, soft locks (embedded default)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from services.cases.models import Message
from shared import events as ev
from shared.bus.dispatch import Outcome
from shared.db import utcnow
from tests.cases_helpers import (
    at,
    flowbridge_event,
    ids,
    message_labeled,
    message_received,
)


@pytest.fixture
def two_partners(world):
    """Health (restricted to 'health') and Open (unrestricted), with one agent each."""
    health, violence = world.label("health"), world.label("violence")
    health_partner = world.partner("Health", restricted=True, labels=(health,))
    open_partner = world.partner("Open")
    return {
        "health": health,
        "violence": violence,
        "health_agent": world.user(health_partner),
        "open_agent": world.user(open_partner),
        "health_partner": health_partner,
        "open_partner": open_partner,
    }


def inbox(world, person, **query):
    return ids(world.ok(world.get(person, "/api/v1/messages", **query)))


def act(world, person, message, action, label=None):
    body = {"action": action} | ({"label": label} if label else {})
    return world.post(person, f"/api/v1/messages/{message}/actions", body)


# --- consuming ----------------------------------------------------------------------------------
def test_a_labelled_message_reaches_the_partners_that_see_its_label(world, two_partners):
    p = two_partners
    health_msg = world.message([p["health"]])
    violence_msg = world.message([p["violence"]])
    unlabelled = world.message([])
    assert inbox(world, p["health_agent"]) == [health_msg]
    assert inbox(world, p["open_agent"]) == [violence_msg, health_msg]
    assert set(inbox(world, world.admin)) == {health_msg, violence_msg}
    assert inbox(world, world.admin, folder="unlabelled") == [unlabelled]
    assert world.get(p["open_agent"], "/api/v1/messages", folder="unlabelled").status_code == 403
    assert world.get(p["health_agent"], f"/api/v1/messages/{violence_msg}").status_code == 404


def test_labelled_before_received_shows_once_received(world, two_partners):
    p = two_partners
    received = message_received()
    world.deliver(message_labeled(received, [p["health"]]))
    assert inbox(world, p["health_agent"]) == []
    world.deliver(received)
    [shown] = world.ok(world.get(p["health_agent"], "/api/v1/messages"))["items"]
    assert shown["id"] == received.data["message_id"] and shown["labelled"] is True
    assert shown["text"] == "preciso de ajuda"


def test_received_but_not_yet_labelled_stays_out_of_partner_inboxes(world, two_partners):
    p = two_partners
    message = world.message(labelled=False)
    assert inbox(world, p["open_agent"]) == []
    [pending] = world.ok(world.get(world.admin, "/api/v1/messages", folder="unlabelled"))["items"]
    assert pending["id"] == message and pending["labelled"] is False


def test_redelivered_events_change_nothing(world, two_partners):
    received = message_received()
    labeled = message_labeled(received, [two_partners["health"]])
    for event in (received, labeled, received, labeled):
        assert world.deliver(event) is Outcome.ACK
    assert inbox(world, world.admin) == [received.data["message_id"]]


def test_an_older_labeler_opinion_arriving_late_is_ignored(world, two_partners):
    p = two_partners
    received = message_received()
    world.deliver(received)
    newer = message_labeled(received, [p["violence"]], occurred_at=at(60))
    older = message_labeled(received, [p["health"]], occurred_at=at(30))
    world.deliver(newer)
    world.deliver(older)
    message = world.ok(world.get(world.admin, f"/api/v1/messages/{received.data['message_id']}"))
    assert [label["id"] for label in message["labels"]] == [p["violence"]]


def test_a_relabel_keeps_what_people_changed_by_hand(world, two_partners):
    p = two_partners
    received = message_received()
    world.deliver(received)
    world.deliver(message_labeled(received, [p["health"]], occurred_at=at(1)))
    message_id = received.data["message_id"]
    world.ok(act(world, world.admin, message_id, "label", p["violence"]))
    world.deliver(message_labeled(received, [p["health"]], occurred_at=at(2)))
    labels = world.ok(world.get(world.admin, f"/api/v1/messages/{message_id}"))["labels"]
    assert {label["id"] for label in labels} == {p["health"], p["violence"]}


def test_simulation_messages_are_hidden_unless_asked_for(world, two_partners):
    real = world.message([two_partners["health"]])
    simulated = world.message([two_partners["health"]], simulation=True)
    assert inbox(world, world.admin) == [real]
    assert set(inbox(world, world.admin, simulation="true")) == {real, simulated}
    counts = world.ok(world.get(world.admin, "/api/v1/messages/counts"))
    assert counts["folders"]["inbox"] == 1


# --- filters, paging, counts --------------------------------------------------------------------
def test_filters(world, two_partners):
    p = two_partners
    contact = "5d2f1a4e-0000-4000-8000-00000000c0de"
    first = world.message(
        [p["health"]], contact=contact, text="Sofro BULLYING na escola", received_at=at(-300)
    )
    second = world.message(
        [p["violence"]], contact=contact, text="100% sozinha", received_at=at(-200)
    )
    other = world.message([p["health"]], text="bullying de novo", received_at=at(-100))
    ref = world.ok(world.get(world.admin, f"/api/v1/messages/{first}"))["contact"]["ref"]
    assert inbox(world, world.admin, label=p["health"]) == [other, first]
    assert inbox(world, world.admin, contact=ref) == [second, first]
    assert inbox(world, world.admin, contact=ref.lower()) == [second, first]
    assert inbox(world, world.admin, contact="C-NOBODY00") == []
    assert inbox(world, world.admin, q="bullying") == [other, first]
    assert inbox(world, world.admin, q="100%") == [second]
    assert inbox(world, world.admin, q="%") == [second]  # a literal percent, not a wildcard
    assert inbox(world, world.admin, after=at(-250).isoformat()) == [other, second]
    assert inbox(world, world.admin, before=at(-150).isoformat(), after=at(-250).isoformat()) == [
        second
    ]
    # a restricted partner filtering by a label it does not see learns nothing
    assert inbox(world, p["health_agent"], label=p["violence"]) == []


def test_cursor_paging_walks_every_message_once_newest_first(world, two_partners):
    made = [world.message([two_partners["health"]], received_at=at(i)) for i in range(7)]
    # two messages at the very same moment still page apart (the id breaks the tie)
    made.append(world.message([two_partners["health"]], received_at=at(6)))
    seen, cursor = [], None
    while True:
        query = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = world.ok(world.get(world.admin, "/api/v1/messages", **query))
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert seen[-1] == made[0]
    bad = world.get(world.admin, "/api/v1/messages", cursor="garbage")
    assert bad.status_code == 400 and bad.json["error"] == "INVALID_CURSOR"


def test_counts_per_folder_and_label(world, two_partners):
    p = two_partners
    a = world.message([p["health"]])
    world.message([p["health"], p["violence"]])
    world.message([p["violence"]])
    world.message([])
    world.ok(act(world, world.admin, a, "flag"))
    world.ok(act(world, world.admin, a, "archive"))
    counts = world.ok(world.get(world.admin, "/api/v1/messages/counts"))
    assert counts["folders"] == {
        "inbox": 2,
        "flagged": 1,
        "archived": 1,
        "unlabelled": 1,
        "sent": 0,
    }
    assert counts["labels"] == {p["health"]: 1, p["violence"]: 2}
    mine = world.ok(world.get(p["health_agent"], "/api/v1/messages/counts"))
    assert mine["folders"] == {"inbox": 1, "flagged": 1, "archived": 1, "sent": 0}
    assert mine["labels"] == {p["health"]: 1}


# --- actions ------------------------------------------------------------------------------------
def test_actions_move_messages_between_folders_and_are_recorded(world, two_partners):
    p = two_partners
    agent = p["open_agent"]
    message = world.message([p["health"]])
    assert world.ok(act(world, agent, message, "flag"))["flagged"] is True
    assert inbox(world, agent, folder="flagged") == [message]
    assert world.ok(act(world, agent, message, "archive"))["archived"] is True
    assert inbox(world, agent) == [] and inbox(world, agent, folder="archived") == [message]
    world.ok(act(world, agent, message, "archive"))  # already archived: not recorded again
    world.ok(act(world, agent, message, "restore"))
    world.ok(act(world, agent, message, "unflag"))
    world.ok(act(world, agent, message, "label", p["violence"]))
    world.ok(act(world, agent, message, "unlabel", p["health"]))
    history = world.ok(world.get(agent, f"/api/v1/messages/{message}/history"))["items"]
    assert [(h["action"], h["by"]["id"]) for h in history] == [
        ("flag", agent.id),
        ("archive", agent.id),
        ("restore", agent.id),
        ("unflag", agent.id),
        ("label", agent.id),
        ("unlabel", agent.id),
    ]
    assert history[4]["label"]["name"] == "violence"
    assert all(h["at"] for h in history)


def test_label_actions_need_a_label_the_caller_sees(world, two_partners):
    p = two_partners
    message = world.message([p["health"]])
    response = act(world, p["health_agent"], message, "label", p["violence"])
    assert response.status_code == 404 and response.json["error"] == "LABEL_NOT_FOUND"
    missing = world.post(
        p["health_agent"], f"/api/v1/messages/{message}/actions", {"action": "label"}
    )
    assert missing.status_code == 400 and "label" in missing.json["fields"]


def test_restricted_partners_see_only_their_labels_on_a_message(world, two_partners):
    p = two_partners
    message = world.message([p["health"], p["violence"]])
    shown = world.ok(world.get(p["health_agent"], f"/api/v1/messages/{message}"))
    assert [label["name"] for label in shown["labels"]] == ["health"]


def test_bulk_actions_are_all_or_nothing(world, two_partners):
    p = two_partners
    mine = [world.message([p["health"]]) for _ in range(3)]
    hidden = world.message([p["violence"]])
    refused = world.post(
        p["health_agent"],
        "/api/v1/messages/actions",
        {"action": "archive", "messages": [*mine, hidden]},
    )
    assert refused.status_code == 404 and hidden not in refused.get_data(as_text=True)
    assert len(inbox(world, p["health_agent"])) == 3
    done = world.post(
        p["health_agent"], "/api/v1/messages/actions", {"action": "archive", "messages": mine}
    )
    assert all(m["archived"] for m in world.ok(done)["items"])
    assert inbox(world, p["health_agent"]) == []


def test_archiving_is_mirrored_only_when_the_org_asks(world, two_partners):
    message = world.message([two_partners["health"]], external_id="ext-1")
    world.ok(act(world, world.admin, message, "archive"))
    assert world.events(ev.MESSAGE_ARCHIVED) == []
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"mirror_archive": True}))
    world.ok(act(world, world.admin, message, "restore"))
    world.post(
        world.admin, "/api/v1/messages/actions", {"action": "archive", "messages": [message]}
    )
    [restored] = world.events(ev.MESSAGE_RESTORED)
    [archived] = world.events(ev.MESSAGE_ARCHIVED)
    assert restored.data == {"message_ids": [message], "external_ids": ["ext-1"]}
    assert archived.data["external_ids"] == ["ext-1"]


# --- replies ------------------------------------------------------------------------------------
def test_reply_archives_the_message_and_requests_delivery(world, two_partners):
    p = two_partners
    agent = p["health_agent"]
    message = world.message([p["health"]])
    reply = world.ok(
        world.post(agent, f"/api/v1/messages/{message}/reply", {"text": "Estamos aqui."}), 201
    )
    assert reply["delivery"] == "pending" and reply["reply_to"] == message
    [requested] = world.events(ev.OUTGOING_REQUESTED)
    assert requested.data["outgoing_id"] == reply["id"] and requested.data["reply_to"] == message
    assert requested.data["text"] == "Estamos aqui." and requested.data["case_id"] is None
    assert inbox(world, agent) == [] and inbox(world, agent, folder="archived") == [message]
    assert inbox(world, agent, folder="sent") == [reply["id"]]
    assert inbox(world, p["open_agent"], folder="sent") == []  # another partner's reply
    actions = [
        h["action"]
        for h in world.ok(world.get(agent, f"/api/v1/messages/{message}/history"))["items"]
    ]
    assert actions == ["reply", "archive"]


def test_delivery_results_update_the_reply_and_sent_wins(world, two_partners):
    message = world.message([two_partners["health"]])
    first = world.ok(
        world.post(world.admin, f"/api/v1/messages/{message}/reply", {"text": "one"}), 201
    )
    second = world.ok(
        world.post(world.admin, f"/api/v1/messages/{message}/reply", {"text": "two"}), 201
    )
    world.deliver(
        flowbridge_event(
            ev.OUTGOING_SENT, outgoing_id=first["id"], external_id=7, sent_on=at(1).isoformat()
        )
    )
    world.deliver(
        flowbridge_event(ev.OUTGOING_FAILED, outgoing_id=first["id"], reason="late duplicate")
    )
    world.deliver(
        flowbridge_event(ev.OUTGOING_FAILED, outgoing_id=second["id"], reason="contact stopped")
    )
    world.deliver(
        flowbridge_event(ev.OUTGOING_SENT, outgoing_id="unknown-reply", sent_on=at(1).isoformat())
    )
    sent = {
        o["id"]: o
        for o in world.ok(world.get(world.admin, "/api/v1/messages", folder="sent"))["items"]
    }
    assert sent[first["id"]]["delivery"] == "sent"
    assert sent[first["id"]]["sent_on"] == at(1).isoformat()
    assert sent[second["id"]]["delivery"] == "failed"
    assert sent[second["id"]]["failure"] == "contact stopped"


@pytest.mark.parametrize(
    "body", [{}, {"text": ""}, {"text": "   "}, {"text": "x" * 5000}, {"text": 5}]
)
def test_a_bad_reply_gets_400_and_sends_nothing(world, two_partners, body):
    message = world.message([two_partners["health"]])
    response = world.post(world.admin, f"/api/v1/messages/{message}/reply", body)
    assert response.status_code == 400 and "text" in response.json["fields"]
    assert world.events(ev.OUTGOING_REQUESTED) == []


# --- soft locks ---------------------------------------------------------------------------------
def test_a_message_being_answered_shows_as_locked_to_others(world, two_partners):
    p = two_partners
    ana, bia = p["open_agent"], world.user(p["open_partner"], name="Bia")
    message = world.message([p["health"]])
    locked = world.ok(world.post(ana, f"/api/v1/messages/{message}/lock"))
    assert locked["lock"]["locked_by"]["id"] == ana.id
    seen = world.ok(world.get(bia, f"/api/v1/messages/{message}"))
    assert seen["lock"]["locked_by"] == {"id": ana.id, "name": locked["lock"]["locked_by"]["name"]}
    taken = world.post(bia, f"/api/v1/messages/{message}/lock")
    assert taken.status_code == 409 and taken.json["error"] == "MESSAGE_LOCKED"
    assert world.ok(world.post(ana, f"/api/v1/messages/{message}/lock"))  # extends her own
    world.ok(world.post(ana, f"/api/v1/messages/{message}/reply", {"text": "oi"}), 201)
    assert world.ok(world.get(bia, f"/api/v1/messages/{message}"))["lock"] is None


def test_an_expired_lock_no_longer_holds(world, two_partners):
    p = two_partners
    ana, bia = p["open_agent"], world.user(p["open_partner"])
    message = world.message([p["health"]])
    world.ok(world.post(ana, f"/api/v1/messages/{message}/lock"))
    with world.store.db.session() as session, session.begin():
        session.execute(update(Message).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert world.ok(world.get(bia, f"/api/v1/messages/{message}"))["lock"] is None
    assert (
        world.ok(world.post(bia, f"/api/v1/messages/{message}/lock"))["lock"]["locked_by"]["id"]
        == bia.id
    )
    released = world.call(bia, "DELETE", f"/api/v1/messages/{message}/lock")
    assert world.ok(released)["lock"] is None

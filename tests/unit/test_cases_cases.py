"""Cases: open (once per contact), the messages that follow, timeline, notes, reassign, labels,
close and reopen, watchers and notifications, flowbridge's reports (embedded default)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from services.cases.models import Case
from shared import events as ev
from shared.db import utcnow
from tests.cases_helpers import at, flowbridge_event, ids, new_uuid

CONTACT = "0f025fea-98bb-46bf-a0fe-005db39635cf"


@pytest.fixture
def helpline(world):
    """One label, a partner restricted to it with a manager and an agent, and an open partner."""
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    other = world.partner("Other")
    return {
        "label": label,
        "partner": partner,
        "other": other,
        "manager": world.user(partner, role="manager", name="Marta"),
        "agent": world.user(partner, name="Ana"),
        "outsider": world.user(other, name="Otto"),
    }


def timeline(world, person, case_id, **query):
    return world.ok(world.get(person, f"/api/v1/cases/{case_id}/timeline", **query))["items"]


def case_events(world):
    return [e for e in world.events() if e.name.startswith("case.")]


# --- opening ------------------------------------------------------------------------------------
def test_opening_a_case_from_a_message(world, helpline):
    h = helpline
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"mirror_archive": True}))
    message = world.message([h["label"]], contact=CONTACT, external_id="ext-9")
    case = world.open_case(h["agent"], message, h["partner"], user=h["agent"].id)
    assert case["state"] == "open" and case["case_version"] == 1
    assert case["assignee_partner"] == {"id": h["partner"], "name": "Helpline"}
    assert case["labels"] == [{"id": h["label"], "name": "violence"}]  # from the message
    assert case["watching"] is True and case["initial_message"] == message
    [opened] = world.events(ev.CASE_OPENED)
    assert opened.data["case_id"] == case["id"] and opened.data["case_version"] == 1
    assert opened.data["contact_uuid"] == CONTACT
    assert opened.data["assignee_user"]["id"] == h["agent"].id
    assert opened.data["archived_external_ids"] == ["ext-9"]
    shown = world.ok(world.get(h["agent"], f"/api/v1/messages/{message}"))
    assert shown["archived"] is True and shown["case"] == case["id"]
    assert [(e["type"], e["action"]) for e in timeline(world, h["agent"], case["id"])] == [
        ("incoming", None),
        ("action", "open"),
    ]


def test_one_open_case_per_contact(world, helpline):
    h = helpline
    first = world.message([h["label"]], contact=CONTACT)
    second = world.message([h["label"]], contact=CONTACT)
    case = world.open_case(h["agent"], first, h["partner"])
    again = world.post(
        h["manager"],
        "/api/v1/cases",
        {"summary": "again", "partner": h["other"], "message": second},
    )
    assert again.status_code == 200 and again.json["id"] == case["id"]
    assert len(world.events(ev.CASE_OPENED)) == 1


def test_a_partner_that_cannot_see_the_existing_case_learns_only_that_there_is_one(world, helpline):
    h = helpline
    other_label = world.label("other")
    first = world.message([h["label"], other_label], contact=CONTACT)
    case = world.open_case(h["agent"], first, h["partner"])
    world.ok(
        world.call(
            world.admin, "PUT", f"/api/v1/cases/{case['id']}/labels", {"labels": [h["label"]]}
        )
    )
    stranger = world.user(world.partner(restricted=True, labels=(other_label,)))
    later = world.message([other_label], contact=CONTACT)  # goes into the case...
    assert world.get(stranger, f"/api/v1/messages/{later}").status_code == 200
    response = world.post(
        stranger, "/api/v1/cases", {"summary": "x", "partner": h["other"], "message": later}
    )
    assert response.status_code == 409 and case["id"] not in response.get_data(as_text=True)


def test_opening_with_a_first_reply_and_for_a_contact_reference(world, helpline):
    h = helpline
    message = world.message([h["label"]], contact=CONTACT)
    ref = world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))["contact"]["ref"]
    body = {"summary": "by ref", "partner": h["partner"], "contact": ref, "reply": "Olá!"}
    case = world.ok(world.post(world.admin, "/api/v1/cases", body), 201)
    [requested] = world.events(ev.OUTGOING_REQUESTED)
    assert requested.data["case_id"] == case["id"] and requested.data["text"] == "Olá!"
    assert requested.data["contact_uuid"] == CONTACT
    # opened by reference, the inbox message stays where it was
    assert world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))["case"] is None


def test_a_contact_reference_the_caller_never_saw_is_not_found(world, helpline):
    h = helpline
    message = world.message([world.label("hidden")], contact=CONTACT)
    ref = world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))["contact"]["ref"]
    response = world.post(
        h["agent"], "/api/v1/cases", {"summary": "x", "partner": h["partner"], "contact": ref}
    )
    assert response.status_code == 404 and response.json["error"] == "CONTACT_NOT_FOUND"


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"summary": "x", "partner": "p"}, 400, "message"),
        ({"summary": "x", "partner": "p", "message": "m", "contact": "C-1"}, 400, "message"),
        ({"partner": "p", "message": "m"}, 400, "summary"),
        ({"summary": "x", "partner": "unknown", "message": "MSG"}, 422, "partner"),
        ({"summary": "x", "partner": "PARTNER", "user": "unknown", "message": "MSG"}, 422, "user"),
        ({"summary": "x", "partner": "OTHER", "user": "AGENT", "message": "MSG"}, 422, "user"),
    ],
)
def test_bad_open_requests(world, helpline, body, status, field):
    h = helpline
    message = world.message([h["label"]])
    swap = {"MSG": message, "PARTNER": h["partner"], "OTHER": h["other"], "AGENT": h["agent"].id}
    body = {k: swap.get(v, v) for k, v in body.items()}
    response = world.post(h["agent"], "/api/v1/cases", body)
    assert response.status_code == status and field in response.json["fields"]
    assert world.events(ev.CASE_OPENED) == []


def test_an_unknown_user_and_another_partners_user_get_the_same_answer(world, helpline):
    """GET /users/<id> answers 404 for both: opening or reassigning must not tell them apart."""
    h = helpline
    agent, outsider = h["agent"], h["outsider"]
    message = world.message([h["label"]])
    opened = [
        world.post(
            agent,
            "/api/v1/cases",
            {"summary": "x", "partner": h["partner"], "user": user, "message": message},
        )
        for user in ("u-does-not-exist", outsider.id)
    ]
    assert [r.status_code for r in opened] == [422, 422]
    assert opened[0].json == opened[1].json
    case_id = world.open_case(agent, message, h["partner"])["id"]
    reassigned = [
        world.post(agent, f"/api/v1/cases/{case_id}/reassign", {"user": user})
        for user in ("u-does-not-exist", outsider.id)
    ]
    assert [r.status_code for r in reassigned] == [422, 422]
    assert reassigned[0].json == reassigned[1].json == opened[0].json
    assert world.get(agent, f"/api/v1/users/{outsider.id}").status_code == 404


# --- messages while a case is open --------------------------------------------------------------
def test_messages_while_open_go_into_the_case_and_after_close_to_the_inbox(world, helpline):
    h = helpline
    source = world.message([h["label"]], contact=CONTACT, received_at=at(0))
    already_waiting = world.message([h["label"]], contact=CONTACT, received_at=at(1))
    older = world.message([h["label"]], contact=CONTACT, received_at=at(-10))
    case = world.open_case(h["agent"], source, h["partner"])
    during = world.message([h["label"]], contact=CONTACT, received_at=at(5))
    unlabelled_during = world.message([], contact=CONTACT, received_at=at(6))
    inbox = ids(world.ok(world.get(h["agent"], "/api/v1/messages")))
    assert inbox == [older]
    incoming = [e["id"] for e in timeline(world, h["agent"], case["id"]) if e["type"] == "incoming"]
    assert incoming == [source, already_waiting, during, unlabelled_during]
    world.ok(world.post(h["agent"], f"/api/v1/cases/{case['id']}/close", {"note": "done"}))
    after = world.message([h["label"]], contact=CONTACT, received_at=at(9))
    assert ids(world.ok(world.get(h["agent"], "/api/v1/messages"))) == [after, older]
    restore = world.post(h["agent"], f"/api/v1/messages/{during}/actions", {"action": "restore"})
    assert world.ok(restore)["archived"] is False  # closed: it may go back to the inbox


def test_the_case_partner_reads_later_messages_but_not_their_hidden_labels(world, helpline):
    """A restricted partner handling a case needs the whole conversation: the contact's later
    messages join the case whatever their labels, and the partner reads them there, but a label
    it does not see stays hidden on them (message, timeline, history)."""
    h = helpline
    agent = h["agent"]
    hidden = world.label("hidden from the helpline")
    case = world.open_case(agent, world.message([h["label"]], contact=CONTACT), h["partner"])
    later = world.message([hidden], contact=CONTACT)  # only a label the helpline does not see
    incoming = [e for e in timeline(world, agent, case["id"]) if e["type"] == "incoming"]
    assert later in [e["id"] for e in incoming]
    shown = world.ok(world.get(agent, f"/api/v1/messages/{later}"))
    assert shown["case"] == case["id"] and shown["labels"] == []
    assert world.ok(world.get(world.admin, f"/api/v1/messages/{later}"))["labels"] != []
    history = world.ok(world.get(agent, f"/api/v1/messages/{later}/history"))["items"]
    assert all(entry["label"] is None for entry in history)
    answer = world.get(agent, f"/api/v1/cases/{case['id']}/timeline").get_data(as_text=True)
    assert hidden not in answer and "hidden from the helpline" not in answer


def test_a_message_in_an_open_case_cannot_be_restored(world, helpline):
    h = helpline
    message = world.message([h["label"]], contact=CONTACT)
    world.open_case(h["agent"], message, h["partner"])
    response = world.post(h["agent"], f"/api/v1/messages/{message}/actions", {"action": "restore"})
    assert response.status_code == 409 and response.json["error"] == "MESSAGE_IN_CASE"


# --- working the case ---------------------------------------------------------------------------
def test_notes_reassign_labels_and_versions(world, helpline):
    h = helpline
    message = world.message([h["label"]], contact=CONTACT)
    case = world.open_case(h["agent"], message, h["partner"])
    cid = case["id"]
    noted = world.ok(
        world.post(h["agent"], f"/api/v1/cases/{cid}/notes", {"note": "called the school"}), 201
    )
    assert noted["case_version"] == 2
    second_label = world.label("school")
    world.ok(
        world.call(
            world.admin,
            "PATCH",
            f"/api/v1/partners/{h['partner']}",
            {"labels": [h["label"], second_label]},
        )
    )
    labelled = world.ok(
        world.call(h["agent"], "PUT", f"/api/v1/cases/{cid}/labels", {"labels": [second_label]})
    )
    assert [label["name"] for label in labelled["labels"]] == ["school"]
    world.ok(
        world.call(h["agent"], "PUT", f"/api/v1/cases/{cid}/labels", {"labels": [second_label]})
    )  # no change: no event, no version
    moved = world.ok(
        world.post(
            h["agent"],
            f"/api/v1/cases/{cid}/reassign",
            {"partner": h["other"], "user": h["outsider"].id},
        )
    )
    assert moved["assignee_user"]["id"] == h["outsider"].id and moved["case_version"] == 4
    events = case_events(world)
    assert [(e.name, e.data["case_version"]) for e in events] == [
        (ev.CASE_OPENED, 1),
        (ev.CASE_NOTE_ADDED, 2),
        (ev.CASE_LABELS_CHANGED, 3),
        (ev.CASE_REASSIGNED, 4),
    ]
    assert events[2].data["labels"] == [second_label]
    assert events[3].data["assignee_partner"]["id"] == h["other"]
    actions = [
        (e["action"], e["note"]) for e in timeline(world, world.admin, cid) if e["type"] == "action"
    ]
    assert actions == [
        ("open", "needs a human"),
        ("note", "called the school"),
        ("labels", None),
        ("reassign", None),
    ]
    # the old partner still sees the case through its label, but no longer works it
    assert world.ok(world.get(h["agent"], f"/api/v1/cases/{cid}"))["access"] == "read"
    refused = world.post(h["agent"], f"/api/v1/cases/{cid}/notes", {"note": "x"})
    assert refused.status_code == 403


def test_restricted_partners_cannot_remove_labels_they_do_not_see(world, helpline):
    h = helpline
    hidden = world.label("hidden")
    message = world.message([h["label"], hidden], contact=CONTACT)
    case = world.open_case(world.admin, message, h["partner"])
    world.ok(world.call(h["agent"], "PUT", f"/api/v1/cases/{case['id']}/labels", {"labels": []}))
    [changed] = world.events(ev.CASE_LABELS_CHANGED)
    assert changed.data["labels"] == [hidden]
    refused = world.call(
        h["agent"], "PUT", f"/api/v1/cases/{case['id']}/labels", {"labels": [hidden]}
    )
    assert refused.status_code == 422 and "labels" in refused.json["fields"]


def test_close_reopen_and_invalid_transitions(world, helpline):
    h = helpline
    message = world.message([h["label"]], contact=CONTACT)
    cid = world.open_case(h["agent"], message, h["partner"])["id"]
    no_note = world.post(h["agent"], f"/api/v1/cases/{cid}/close", {})
    assert no_note.status_code == 400 and "note" in no_note.json["fields"]
    closed = world.ok(world.post(h["agent"], f"/api/v1/cases/{cid}/close", {"note": "ok"}))
    assert closed["state"] == "closed" and closed["closed_on"]
    again = world.post(h["agent"], f"/api/v1/cases/{cid}/close", {"note": "again"})
    assert again.status_code == 409 and again.json["error"] == "CASE_ALREADY_CLOSED"
    reply = world.post(h["agent"], f"/api/v1/cases/{cid}/reply", {"text": "hi"})
    assert reply.status_code == 409 and reply.json["error"] == "CASE_CLOSED"
    world.ok(world.post(h["agent"], f"/api/v1/cases/{cid}/notes", {"note": "follow-up"}), 201)
    reopened = world.ok(world.post(h["agent"], f"/api/v1/cases/{cid}/reopen", {}))
    assert reopened["state"] == "open" and reopened["reopened_on"]
    twice = world.post(h["agent"], f"/api/v1/cases/{cid}/reopen", {})
    assert twice.status_code == 409 and twice.json["error"] == "CASE_ALREADY_OPEN"
    world.ok(world.post(h["agent"], f"/api/v1/cases/{cid}/close", {"note": "really done"}))
    closes = world.events(ev.CASE_CLOSED)
    assert [c.data["first_close"] for c in closes] == [True, False]
    assert closes[0].data["closed_on"] and closes[0].data["opened_on"]
    [reopen] = world.events(ev.CASE_REOPENED)
    versions = [e.data["case_version"] for e in case_events(world)]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert reopen.data["case_version"] == closes[1].data["case_version"] - 1


def test_reopen_is_refused_while_the_contact_has_another_open_case(world, helpline):
    h = helpline
    first = world.message([h["label"]], contact=CONTACT)
    old = world.open_case(h["agent"], first, h["partner"])["id"]
    world.ok(world.post(h["agent"], f"/api/v1/cases/{old}/close", {"note": "done"}))
    second = world.message([h["label"]], contact=CONTACT)
    world.open_case(h["agent"], second, h["partner"])
    response = world.post(h["agent"], f"/api/v1/cases/{old}/reopen", {})
    assert response.status_code == 409 and response.json["error"] == "CONTACT_HAS_OPEN_CASE"


def test_replies_in_a_case(world, helpline):
    h = helpline
    message = world.message([h["label"]], contact=CONTACT)
    cid = world.open_case(h["agent"], message, h["partner"])["id"]
    sent = world.ok(world.post(h["agent"], f"/api/v1/cases/{cid}/reply", {"text": "Oi"}), 201)
    [requested] = world.events(ev.OUTGOING_REQUESTED)
    assert requested.data == {
        "outgoing_id": sent["id"],
        "contact_uuid": CONTACT,
        "text": "Oi",
        "case_id": cid,
        "reply_to": message,
    }
    world.deliver(
        flowbridge_event(ev.OUTGOING_SENT, outgoing_id=sent["id"], sent_on=at(3).isoformat())
    )
    [outgoing] = [e for e in timeline(world, h["agent"], cid) if e["type"] == "outgoing"]
    assert outgoing["delivery"] == "sent" and outgoing["by"]["id"] == h["agent"].id


# --- lists, timeline, warnings ------------------------------------------------------------------
def test_case_list_filters_and_warning(world, helpline):
    h = helpline
    label_b = world.label("b")
    one = world.open_case(
        world.admin, world.message([h["label"]]), h["partner"], user=h["agent"].id
    )["id"]
    two = world.open_case(world.admin, world.message([label_b]), h["other"])["id"]
    three = world.open_case(world.admin, world.message([h["label"]]), h["partner"])["id"]
    world.ok(world.post(world.admin, f"/api/v1/cases/{three}/close", {"note": "done"}))
    with world.store.db.session() as session, session.begin():
        session.execute(
            update(Case).where(Case.id == one).values(opened_on=utcnow() - timedelta(days=10))
        )

    def listed(person=world.admin, **query):
        return ids(world.ok(world.get(person, "/api/v1/cases", **query)))

    assert listed() == [three, two, one]
    assert listed(state="open") == [two, one] and listed(state="closed") == [three]
    assert listed(partner=h["other"]) == [two]
    assert listed(user=h["agent"].id) == [one]
    assert listed(label=label_b) == [two]
    assert listed(opened_before=(utcnow() - timedelta(days=1)).isoformat()) == [one]
    assert listed(opened_after=(utcnow() - timedelta(days=1)).isoformat()) == [three, two]
    assert listed(h["agent"]) == [three, one]  # the other partner's case is not theirs
    assert listed(limit=2) == [three, two]
    cursor = world.ok(world.get(world.admin, "/api/v1/cases", limit=2))["next_cursor"]
    assert listed(limit=2, cursor=cursor) == [one]
    warnings = {
        c["id"]: c["warning"] for c in world.ok(world.get(world.admin, "/api/v1/cases"))["items"]
    }
    assert warnings == {one: True, two: False, three: False}
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"warning_days": 30}))
    assert world.ok(world.get(world.admin, f"/api/v1/cases/{one}"))["warning"] is False


def test_timeline_pages_in_order_across_messages_replies_and_actions(world, helpline):
    h = helpline
    cid = world.open_case(
        h["agent"], world.message([h["label"]], contact=CONTACT, received_at=at(-5)), h["partner"]
    )["id"]
    for i in range(3):
        world.post(h["agent"], f"/api/v1/cases/{cid}/reply", {"text": f"reply {i}"})
        world.message([h["label"]], contact=CONTACT, received_at=utcnow())
        world.post(h["agent"], f"/api/v1/cases/{cid}/notes", {"note": f"note {i}"})
    everything = timeline(world, h["agent"], cid, limit=200)
    assert len(everything) == 11
    assert [e["at"] for e in everything] == sorted(e["at"] for e in everything)
    paged, cursor = [], None
    while True:
        query = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = world.ok(world.get(h["agent"], f"/api/v1/cases/{cid}/timeline", **query))
        paged += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [e["id"] for e in paged] == [e["id"] for e in everything]


def test_flowbridge_reports_show_in_the_timeline_as_system_actions(world, helpline):
    h = helpline
    cid = world.open_case(h["agent"], world.message([h["label"]], contact=CONTACT), h["partner"])[
        "id"
    ]
    base = {"case_id": cid, "case_version": 1, "contact_uuid": CONTACT}
    world.deliver(flowbridge_event(ev.CONTACT_SUSPENDED, groups=["g-bot"], **base))
    world.deliver(flowbridge_event(ev.CONTACT_RESTORED, groups=["g-bot"], **base))
    world.deliver(
        flowbridge_event(ev.FOLLOWUP_STARTED, case_id=cid, contact_uuid=CONTACT, flow_uuid="f-1")
    )
    world.deliver(
        flowbridge_event(
            ev.CONTACT_SUSPENDED,
            groups=[],
            case_id=new_uuid(),
            case_version=1,
            contact_uuid=CONTACT,
        )
    )  # unknown: ignored
    system = [
        (e["action"], e["by"])
        for e in timeline(world, h["agent"], cid)
        if e["type"] == "action" and e["action"] != "open"
    ]
    assert system == [("suspended", None), ("restored", None), ("followup", None)]


# --- watchers and notifications -----------------------------------------------------------------
def test_notifications_for_watchers_and_assignees(world, helpline):
    h = helpline
    agent, manager = h["agent"], h["manager"]
    cid = world.open_case(
        agent, world.message([h["label"]], contact=CONTACT), h["partner"], user=manager.id
    )["id"]
    world.ok(world.call(agent, "PUT", f"/api/v1/cases/{cid}/watch"))
    world.message([h["label"]], contact=CONTACT)  # the contact writes again
    world.post(manager, f"/api/v1/cases/{cid}/notes", {"note": "seen"})
    world.post(agent, f"/api/v1/cases/{cid}/close", {"note": "done"})
    world.post(manager, f"/api/v1/cases/{cid}/reopen", {})

    def kinds(person, **query):
        items = world.ok(world.get(person, "/api/v1/notifications", **query))["items"]
        return [n["kind"] for n in items]

    assert kinds(manager) == ["closed", "message", "assigned"]
    assert kinds(agent) == ["reopened", "note", "message"]
    unwatched = world.ok(world.call(agent, "DELETE", f"/api/v1/cases/{cid}/watch"))
    assert unwatched["watching"] is False
    world.post(manager, f"/api/v1/cases/{cid}/notes", {"note": "again"})
    assert kinds(agent) == ["reopened", "note", "message"]
    first = world.ok(world.get(agent, "/api/v1/notifications"))["items"][0]
    assert world.ok(world.post(agent, f"/api/v1/notifications/{first['id']}/read"))["read"]
    assert kinds(agent, unread="true") == ["note", "message"]
    assert world.post(manager, f"/api/v1/notifications/{first['id']}/read").status_code == 404
    assert world.ok(world.post(agent, "/api/v1/notifications/read"))["marked"] == 2
    assert kinds(agent, unread="true") == []


def test_notifications_never_outlive_access_to_the_case(world, helpline):
    """A restricted agent who watched a case hears nothing more of it once it went to another
    partner without her label, sees none of its notifications, and stops watching it."""
    h = helpline
    agent, admin, outsider = h["agent"], world.admin, h["outsider"]
    cid = world.open_case(admin, world.message([h["label"]], contact=CONTACT), h["partner"])["id"]
    world.ok(world.call(agent, "PUT", f"/api/v1/cases/{cid}/watch"))
    world.post(admin, f"/api/v1/cases/{cid}/notes", {"note": "before"})

    def kinds(person):
        items = world.ok(world.get(person, "/api/v1/notifications"))["items"]
        return [(n["kind"], n["case"]) for n in items]

    assert kinds(agent) == [("note", cid)]
    world.ok(world.post(admin, f"/api/v1/cases/{cid}/reassign", {"partner": h["other"]}))
    world.ok(world.call(admin, "PUT", f"/api/v1/cases/{cid}/labels", {"labels": []}))
    assert world.get(agent, f"/api/v1/cases/{cid}").status_code == 404
    assert kinds(agent) == []

    world.post(admin, f"/api/v1/cases/{cid}/notes", {"note": "after"})
    world.post(outsider, f"/api/v1/cases/{cid}/reply", {"text": "hello"})
    world.message([], contact=CONTACT)  # the contact writes into the case
    assert kinds(agent) == []
    assert world.post(agent, "/api/v1/notifications/read").json["marked"] == 0

    # Access back through the label: the old note shows again, but nothing written meanwhile,
    # and she no longer watches (she would have to choose to again).
    world.ok(world.call(admin, "PUT", f"/api/v1/cases/{cid}/labels", {"labels": [h["label"]]}))
    assert kinds(agent) == [("note", cid)]
    assert world.ok(world.get(agent, f"/api/v1/cases/{cid}"))["watching"] is False
    world.post(admin, f"/api/v1/cases/{cid}/notes", {"note": "later"})
    assert kinds(agent) == [("note", cid)]


def test_rewriting_the_summary_of_an_open_case(world, helpline):
    h = helpline
    message = world.message([h["label"]], contact=CONTACT)
    cid = world.open_case(world.admin, message, h["partner"])["id"]
    path = f"/api/v1/cases/{cid}/summary"
    changed = world.ok(world.call(h["agent"], "PUT", path, {"summary": "  Bullied at school "}))
    assert changed["summary"] == "Bullied at school" and changed["case_version"] == 2
    world.ok(world.call(h["agent"], "PUT", path, {"summary": "Bullied at school"}))  # no change
    events = case_events(world)
    assert [(e.name, e.data["case_version"]) for e in events] == [
        (ev.CASE_OPENED, 1),
        (ev.CASE_SUMMARY_CHANGED, 2),
    ]
    assert "summary" not in events[1].data  # partners' words stay in the cases service
    actions = [(e["action"], e["note"]) for e in timeline(world, world.admin, cid)]
    assert ("summary", "needs a human") in actions  # the timeline keeps the one it replaced
    blank = world.call(h["agent"], "PUT", path, {"summary": "   "})
    assert blank.status_code == 400
    assert world.call(h["outsider"], "PUT", path, {"summary": "mine"}).status_code == 403
    world.ok(world.post(world.admin, f"/api/v1/cases/{cid}/close", {"note": "done"}))
    closed = world.call(h["agent"], "PUT", path, {"summary": "too late"})
    assert closed.status_code == 409
    assert (
        world.ok(world.get(world.admin, f"/api/v1/cases/{cid}"))["summary"] == "Bullied at school"
    )

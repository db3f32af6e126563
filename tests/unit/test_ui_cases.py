"""The case pages: opening a case from the inbox, its page and timeline, reply, note, close,
reopen and watch, and what a partner may not see (embedded default, Flask's test client)."""

from __future__ import annotations

import re

import pytest

from shared import events as ev
from tests.unit.test_ui_sign_in import browser, csrf, set_password


@pytest.fixture
def desk(world):
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    agent = world.user(partner, name="Ana")
    client = browser(world)
    set_password(world, client, agent)
    message = world.message([label], text="preciso de ajuda")
    return client, {"label": label, "partner": partner, "message": message, "agent": agent}


def open_case(client, ids, **extra):
    token = csrf(client, "/inbox")
    form = {"csrf_token": token, "summary": "Bullied at school", "assignee": ids["partner"]}
    return client.post(f"/messages/{ids['message']}/open-case", data=form | extra)


def case_id_of(response) -> str:
    return re.search(r"/cases/([0-9a-f-]{36})$", response.headers["Location"]).group(1)


def test_opening_a_case_from_the_inbox_and_working_it(world, desk):
    client, ids = desk
    opened = open_case(client, ids, reply="Estamos aqui.")
    assert opened.status_code == 302
    case_id = case_id_of(opened)
    page = client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert "Bullied at school" in page and "preciso de ajuda" in page and "Estamos aqui." in page
    assert "Opened the case" in page and "Open for 0 days." in page
    assert len(world.events(ev.CASE_OPENED)) == 1
    token = csrf(client, f"/cases/{case_id}")
    for command, text in (("note", "seen by the team"), ("reply", "Como posso ajudar?")):
        answer = client.post(
            f"/cases/{case_id}/{command}", data={"csrf_token": token, "text": text}
        )
        assert answer.status_code == 302
    page = client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert "seen by the team" in page and "Como posso ajudar?" in page and "Note added." in page
    assert "Bullied at school" in client.get("/cases").get_data(as_text=True)
    closed = client.post(f"/cases/{case_id}/close", data={"csrf_token": token, "text": "done"})
    assert closed.status_code == 302 and len(world.events(ev.CASE_CLOSED)) == 1
    assert "Bullied at school" in client.get("/cases?state=closed").get_data(as_text=True)
    assert "Bullied at school" not in client.get("/cases").get_data(as_text=True)
    client.post(f"/cases/{case_id}/reopen", data={"csrf_token": token})
    assert len(world.events(ev.CASE_REOPENED)) == 1
    client.post(f"/cases/{case_id}/unwatch", data={"csrf_token": token})
    assert ">Watch<" in client.get(f"/cases/{case_id}").get_data(as_text=True)


def test_closing_needs_a_final_note_and_commands_need_the_csrf_token(world, desk):
    client, ids = desk
    case_id = case_id_of(open_case(client, ids))
    token = csrf(client, f"/cases/{case_id}")
    client.post(f"/cases/{case_id}/close", data={"csrf_token": token, "text": " "})
    assert "Write something first." in client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert client.post(f"/cases/{case_id}/close", data={"text": "x"}).status_code == 403
    assert world.events(ev.CASE_CLOSED) == []
    assert client.post(f"/cases/{case_id}/explode", data={"csrf_token": token}).status_code == 404


def test_another_partners_case_is_not_found(world, desk):
    client, ids = desk
    other_label = world.label("other")
    other_partner = world.partner("Other", restricted=True, labels=(other_label,))
    theirs = world.open_case(world.admin, world.message([other_label]), other_partner)
    assert client.get(f"/cases/{theirs['id']}").status_code == 404
    token = csrf(client, "/inbox")
    refused = client.post(f"/cases/{theirs['id']}/note", data={"csrf_token": token, "text": "x"})
    assert refused.status_code == 404
    assert world.events(ev.CASE_NOTE_ADDED) == []
    assert "needs a human" not in client.get("/cases").get_data(as_text=True)


def test_a_message_already_in_a_case_links_to_it(world, desk):
    client, ids = desk
    case_id = case_id_of(open_case(client, ids))
    client.post(f"/cases/{case_id}/reopen", data={"csrf_token": csrf(client, f"/cases/{case_id}")})
    archived = client.get("/inbox/archived").get_data(as_text=True)
    assert f"/cases/{case_id}" in archived and "In a case" in archived


def test_the_case_page_fetches_its_entries_again(world, desk):
    client, ids = desk
    contact = "5d2a0000-0000-4000-8000-00000000cafe"
    ids = ids | {"message": world.message([ids["label"]], text="first words", contact=contact)}
    case_id = case_id_of(open_case(client, ids))
    before = client.get(f"/cases/{case_id}/entries").get_data(as_text=True)
    assert "first words" in before and "<html" not in before
    world.message([], text="and then these", contact=contact)  # the contact writes again
    after = client.get(f"/cases/{case_id}/entries").get_data(as_text=True)
    assert "and then these" in after
    token = csrf(client, "/inbox")
    assert token and client.get("/cases/no-such-case/entries").status_code == 404


def test_reassigning_and_relabelling_from_the_case_page(world, desk):
    client, ids = desk
    case_id = case_id_of(open_case(client, ids))
    other = world.partner("Other")
    extra = world.label("extra")
    token = csrf(client, f"/cases/{case_id}")
    labelled = client.post(
        f"/cases/{case_id}/labels",
        data={"csrf_token": token, "labels": [ids["label"]]},
    )
    assert labelled.status_code == 302
    assert world.events(ev.CASE_LABELS_CHANGED) == []  # the same labels: nothing changed
    moved = client.post(f"/cases/{case_id}/reassign", data={"csrf_token": token, "assignee": other})
    assert moved.status_code == 302
    [event] = world.events(ev.CASE_REASSIGNED)
    assert event.data["assignee_partner"]["id"] == other
    # the helpline still reads it through its label, but may no longer change it
    refused = client.post(f"/cases/{case_id}/labels", data={"csrf_token": token, "labels": [extra]})
    assert refused.status_code == 302
    assert "That could not be done." in client.get(f"/cases/{case_id}").get_data(as_text=True)


def test_the_open_a_case_page_assigns_a_partner_or_one_of_its_users(world, desk):
    client, ids = desk
    colleague = world.user(ids["partner"], name="Bruno")
    form_page = client.get(f"/messages/{ids['message']}/open-case?back=/inbox")
    html = form_page.get_data(as_text=True)
    assert form_page.status_code == 200 and "preciso de ajuda" in html
    assert f'<option value="{ids["partner"]}" selected>Helpline: anyone</option>' in html
    assert f'value="{ids["partner"]}/{colleague.id}">Bruno</option>' in html
    token = csrf(client, f"/messages/{ids['message']}/open-case")
    empty = client.post(
        f"/messages/{ids['message']}/open-case",
        data={"csrf_token": token, "summary": " ", "assignee": ids["partner"]},
    )
    assert empty.status_code == 400 and "Give the case a summary" in empty.get_data(as_text=True)
    assert world.events(ev.CASE_OPENED) == []
    opened = open_case(client, ids, assignee=f"{ids['partner']}/{colleague.id}")
    [event] = world.events(ev.CASE_OPENED)
    assert event.data["assignee_user"]["id"] == colleague.id
    # The message is in a case now: its "Open a case" page leads to that case.
    again = client.get(f"/messages/{ids['message']}/open-case")
    assert again.headers["Location"] == f"/cases/{case_id_of(opened)}"


def test_reassigning_to_a_user_of_the_partner(world, desk):
    client, ids = desk
    case_id = case_id_of(open_case(client, ids))
    colleague = world.user(ids["partner"], name="Bruno")
    token = csrf(client, f"/cases/{case_id}")
    client.post(
        f"/cases/{case_id}/reassign",
        data={"csrf_token": token, "assignee": f"{ids['partner']}/{colleague.id}"},
    )
    [event] = world.events(ev.CASE_REASSIGNED)
    assert event.data["assignee_user"]["id"] == colleague.id
    page = client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert f'value="{ids["partner"]}/{colleague.id}" selected>Bruno' in page


def test_editing_the_summary_from_the_case_page(world, desk):
    client, ids = desk
    case_id = case_id_of(open_case(client, ids))
    token = csrf(client, f"/cases/{case_id}")
    client.post(f"/cases/{case_id}/summary", data={"csrf_token": token, "text": "At school"})
    page = client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert '<h1 dir="auto">At school</h1>' in page
    assert "Changed the summary; it was:" in page and "Bullied at school" in page
    client.post(f"/cases/{case_id}/summary", data={"csrf_token": token, "text": " "})
    assert "Write something first." in client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert len(world.events(ev.CASE_SUMMARY_CHANGED)) == 1


def test_the_open_a_case_page_asks_for_an_answer_where_the_org_requires_one(world, desk):
    client, ids = desk
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"must_use_answers": True}))
    form_page = client.get(f"/messages/{ids['message']}/open-case").get_data(as_text=True)
    assert "Ready-made answers" in form_page and 'name="answer"' in form_page
    refused = open_case(client, ids, reply="Estamos aqui.")
    assert refused.status_code == 400  # the form again, with the reason
    assert "Start from a ready-made answer" in refused.get_data(as_text=True)
    assert world.events(ev.CASE_OPENED) == []
    assert open_case(client, ids).status_code == 302  # no first message: nothing to start from

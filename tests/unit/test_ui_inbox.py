"""The inbox pages: folders with counts, search, flag / archive / restore, replying, and what a
page answers when something is wrong (embedded default, Flask's test client)."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.unit.test_ui_sign_in import browser, csrf, set_password


@pytest.fixture
def agent_browser(world):
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    agent = world.user(partner, name="Ana")
    client = browser(world)
    set_password(world, client, agent)
    mine = world.message([label], text="preciso de ajuda")
    other = world.message([world.label("other")], text="someone else's")
    return client, {"label": label, "mine": mine, "other": other}


def act(client, message_id, action, back="/inbox"):
    token = csrf(client, "/inbox")
    return client.post(
        f"/messages/{message_id}/act",
        data={"csrf_token": token, "action": action, "back": back},
    )


def test_folders_with_counts_and_search(agent_browser):
    client, ids = agent_browser
    page = client.get("/inbox").get_data(as_text=True)
    assert 'aria-current="page"' in page and "preciso de ajuda" in page
    for folder in ("Flagged", "Archived", "Sent"):
        assert folder in page
    assert "Unlabelled" not in page  # administrators only
    assert client.get("/inbox/unlabelled").status_code == 404
    found = client.get("/inbox?q=ajuda").get_data(as_text=True)
    assert "preciso de ajuda" in found
    assert "preciso de ajuda" not in client.get("/inbox?q=nada").get_data(as_text=True)
    assert client.get("/inbox?cursor=garbage").status_code == 302  # a bad cursor: first page


def test_flag_archive_and_restore_from_the_page(agent_browser):
    client, ids = agent_browser
    assert act(client, ids["mine"], "flag").headers["Location"] == "/inbox"
    assert "preciso de ajuda" in client.get("/inbox/flagged").get_data(as_text=True)
    act(client, ids["mine"], "archive")
    assert "preciso de ajuda" not in client.get("/inbox").get_data(as_text=True)
    assert "preciso de ajuda" in client.get("/inbox/archived").get_data(as_text=True)
    act(client, ids["mine"], "restore", back="/inbox/archived")
    assert "preciso de ajuda" in client.get("/inbox").get_data(as_text=True)


def test_replying_archives_the_message_and_lists_the_reply_as_sent(agent_browser):
    client, ids = agent_browser
    token = csrf(client, "/inbox")
    sent = client.post(
        f"/messages/{ids['mine']}/reply",
        data={"csrf_token": token, "text": "Estamos aqui.", "back": "/inbox"},
    )
    assert sent.status_code == 302
    after = client.get("/inbox").get_data(as_text=True)
    assert 'role="status"' in after and "Reply queued" in after
    assert "preciso de ajuda" not in after  # replying archives the source
    outbox = client.get("/inbox/sent").get_data(as_text=True)
    assert "Estamos aqui." in outbox and "Queued" in outbox
    empty = client.post(
        f"/messages/{ids['mine']}/reply", data={"csrf_token": token, "text": "  ", "back": "/"}
    )
    assert empty.status_code == 302
    assert "Write the reply first." in client.get("/inbox").get_data(as_text=True)


def test_what_the_partner_may_not_see_is_a_not_found_page(agent_browser):
    client, ids = agent_browser
    refused = act(client, ids["other"], "flag")
    assert refused.status_code == 404
    assert "text/html" in refused.headers["Content-Type"] and "Not found" in refused.text
    assert "someone else's" not in refused.text
    unknown = client.get("/no/such/page")
    assert unknown.status_code == 404 and "<html" in unknown.text
    api = client.get("/api/v1/no/such/thing")
    assert api.status_code == 404 and api.json["error"] == "NOT_FOUND"


def test_actions_need_the_csrf_token(agent_browser):
    client, ids = agent_browser
    refused = client.post(f"/messages/{ids['mine']}/act", data={"action": "flag"})
    assert refused.status_code == 403
    assert "preciso de ajuda" not in client.get("/inbox/flagged").get_data(as_text=True)


def test_an_action_that_is_not_one_changes_nothing(agent_browser):
    client, ids = agent_browser
    assert act(client, ids["mine"], "explode").status_code == 400
    assert "preciso de ajuda" not in client.get("/inbox/flagged").get_data(as_text=True)
    assert "preciso de ajuda" in client.get("/inbox").get_data(as_text=True)


def test_the_inbox_asks_what_is_new_since_its_newest_message(world, agent_browser):
    client, ids = agent_browser
    page = client.get("/inbox").get_data(as_text=True)
    after = quote(re.search(r'data-after="([^"]+)"', page).group(1))
    assert client.get(f"/live/inbox/inbox?after={after}").json == {"new": 0, "label": ""}
    world.message([ids["label"]], text="outra mensagem")
    news = client.get(f"/live/inbox/inbox?after={after}").json
    assert news == {"new": 1, "label": "1 new message"}
    assert client.get("/live/inbox/inbox?after=yesterday").status_code == 404
    assert client.get("/live/inbox/sent?after=" + after).status_code == 404


def test_labelling_from_the_page_and_filtering_by_contact(world, agent_browser):
    client, ids = agent_browser
    second = world.label("second")
    partner = world.ok(world.get(world.admin, "/api/v1/partners"))["items"][0]["id"]
    change = {"labels": [ids["label"], second]}
    world.ok(world.call(world.admin, "PATCH", f"/api/v1/partners/{partner}", change))
    token = csrf(client, "/inbox")
    added = client.post(
        f"/messages/{ids['mine']}/act",
        data={"csrf_token": token, "action": "label", "label": second, "back": "/inbox"},
    )
    assert added.status_code == 302
    labels = world.ok(world.get(world.admin, f"/api/v1/messages/{ids['mine']}"))["labels"]
    assert {label["name"] for label in labels} == {"violence", "second"}
    page = client.get("/inbox").get_data(as_text=True)
    ref = re.search(r"C-[0-9A-Z]{8}", page).group(0)
    world.message([ids["label"]], text="from someone else")
    only = client.get(f"/inbox?contact={ref}").get_data(as_text=True)
    assert "preciso de ajuda" in only and "from someone else" not in only
    assert f"Only the contact {ref}." in only

"""The inbox's tools beyond one message: the bulk bar, the date range, a message's history, the
lock mark, attachments, and the counts beside the folders (embedded default, test client)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.cases_helpers import message_labeled, message_received
from tests.unit.test_ui_inbox import agent_browser  # noqa: F401 (a fixture)
from tests.unit.test_ui_sign_in import browser, csrf, set_password


def bulk(client, messages, action, label=None, back="/inbox"):
    data = {"csrf_token": csrf(client, "/inbox"), "action": action, "back": back}
    if label:
        data["label"] = label
    data["messages"] = list(messages)
    return client.post("/messages/act", data=data)


def texts(client, path="/inbox"):
    page = client.get(path).get_data(as_text=True)
    return set(re.findall(r'<p class="text" dir="auto">([^<]*)</p>', page))


def test_the_bulk_bar_acts_on_every_selected_message(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    second = world.message([ids["label"]], text="segunda")
    third = world.message([ids["label"]], text="terceira")
    page = client.get("/inbox").get_data(as_text=True)
    assert f'name="messages" value="{second}" form="bulk"' in page
    answer = bulk(client, [ids["mine"], second], "flag")
    assert answer.status_code == 302
    assert "2 messages changed." in client.get("/inbox").get_data(as_text=True)
    assert texts(client, "/inbox/flagged") == {"preciso de ajuda", "segunda"}
    bulk(client, [second, third], "archive")
    assert texts(client, "/inbox/archived") == {"segunda", "terceira"}
    bulk(client, [second], "restore", back="/inbox/archived")
    assert texts(client, "/inbox/archived") == {"terceira"}


def test_the_bulk_bar_is_all_or_nothing_and_asks_for_what_is_missing(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    # One message the agent may not see makes the whole request a Not found: nothing changes.
    assert bulk(client, [ids["mine"], ids["other"]], "flag").status_code == 404
    assert texts(client, "/inbox/flagged") == set()
    bulk(client, [], "flag")
    assert "Select one or more messages first." in client.get("/inbox").get_data(as_text=True)
    bulk(client, [ids["mine"]], "label")
    assert "Choose a label first." in client.get("/inbox").get_data(as_text=True)
    assert bulk(client, [ids["mine"]], "delete").status_code == 400
    no_token = client.post("/messages/act", data={"action": "flag", "messages": [ids["mine"]]})
    assert no_token.status_code == 403
    assert texts(client, "/inbox/flagged") == set()


def test_labelling_in_bulk(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    second = world.message([ids["label"]], text="segunda")
    bulk(client, [ids["mine"], second], "unlabel", label=ids["label"])
    # Without the partner's only label the agent no longer sees them: the labels really went.
    assert texts(client) == set()
    for message in (ids["mine"], second):
        assert world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))["labels"] == []


def test_a_date_range_in_the_orgs_timezone(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"timezone": "America/Sao_Paulo"}))
    late = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)  # 20 November, 22:00 in São Paulo
    world.message([ids["label"]], text="late at night", received_at=late)
    world.message(
        [ids["label"]], text="next day", received_at=datetime(2026, 11, 21, 15, tzinfo=UTC)
    )
    assert texts(client, "/inbox?from=2026-11-20&to=2026-11-20") == {"late at night"}
    assert texts(client, "/inbox?from=2026-11-21") >= {"next day"}
    assert "late at night" not in texts(client, "/inbox?from=2026-11-21")
    assert "next day" not in texts(client, "/inbox?to=2026-11-20")
    everything = texts(client, "/inbox?from=not-a-date")  # no bound, not an error
    assert {"late at night", "next day"} <= everything
    page = client.get("/inbox?from=2026-11-20&to=2026-11-20").get_data(as_text=True)
    assert 'value="2026-11-20"' in page and "Clear the search" in page


def test_a_messages_history(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    bulk(client, [ids["mine"]], "flag")
    bulk(client, [ids["mine"]], "archive")
    page = client.get(f"/messages/{ids['mine']}/history?back=/inbox").get_data(as_text=True)
    assert "preciso de ajuda" in page
    assert "Ana flagged it" in page and "Ana archived it" in page
    assert page.index("Ana flagged it") < page.index("Ana archived it")  # oldest first
    assert client.get(f"/messages/{ids['other']}/history").status_code == 404
    evil = client.get(f"/messages/{ids['mine']}/history?back=https://evil.example/")
    assert "evil.example" not in evil.get_data(as_text=True)


def test_the_lock_mark_shows_who_holds_a_message(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    world.ok(world.post(world.admin, f"/api/v1/messages/{ids['mine']}/lock", {}))
    page = client.get("/inbox").get_data(as_text=True)
    admin = world.ok(world.get(world.admin, "/api/v1/me"))["user"]["name"]
    assert f"{admin} is working on it" in page
    world.call(world.admin, "DELETE", f"/api/v1/messages/{ids['mine']}/lock")
    assert "is working on it" not in client.get("/inbox").get_data(as_text=True)


def test_attachments_are_listed_by_kind(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    received = message_received(text="olha a foto")
    received.data["attachments"] = [
        {"content_type": "image/jpeg", "url": "https://media.example/photo.jpg"},
        {"content_type": "geo", "url": "-23.5,-46.6"},
    ]
    world.deliver(received)
    world.deliver(message_labeled(received, [ids["label"]]))
    page = client.get("/inbox").get_data(as_text=True)
    assert '<a href="https://media.example/photo.jpg" rel="noopener noreferrer"' in page
    assert ">Image</a>" in page and "<li>Location</li>" in page


def test_counts_of_labels_and_cases_beside_the_folders(world, agent_browser):  # noqa: F811
    client, ids = agent_browser
    partner = world.ok(world.get(world.admin, "/api/v1/partners"))["items"][0]["id"]
    world.message([ids["label"]], text="segunda")
    case = world.open_case(world.admin, ids["mine"], partner)
    nav = client.get("/inbox").get_data(as_text=True).split("</nav>")[1]

    def count(title):
        return re.search(rf"<span[^>]*>{title}</span> <span class=\"count\">(\d+)</span>", nav)

    assert count("Open cases").group(1) == "1" and count("Closed cases").group(1) == "0"
    assert count("violence").group(1) == "1"  # the other went into the case, archived
    assert count("other") is None  # a label the restricted partner does not have
    world.ok(world.post(world.admin, f"/api/v1/cases/{case['id']}/close", {"note": "done"}))
    nav = client.get("/inbox").get_data(as_text=True).split("</nav>")[1]
    assert count("Open cases").group(1) == "0" and count("Closed cases").group(1) == "1"


def test_an_administrator_sees_every_label_count(world):
    client = browser(world)
    set_password(world, client, world.admin)
    world.message([world.label("urgent")], text="a")
    page = client.get("/inbox").get_data(as_text=True)
    assert re.search(r'<span dir="auto">urgent</span> <span class="count">1</span>', page)

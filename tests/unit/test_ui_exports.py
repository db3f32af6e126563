"""The export pages: the inbox's and the case list's Export form (the current folder and search,
or state), the exports page refreshing itself while one is built, the download, and the
notification that leads there (embedded default, Flask's test client)."""

from __future__ import annotations

import csv
import io

import pytest

from shared import events as ev
from shared.bus.dispatch import Outcome
from tests.unit.test_ui_sign_in import browser, csrf, set_password

REFRESH = '<meta http-equiv="refresh"'


@pytest.fixture
def desk(world):
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    agent = world.user(partner, name="Ana")
    client = browser(world)
    set_password(world, client, agent)
    return client, agent, label


def built(world):
    """Let the worker build every export asked for."""
    for event in world.events(ev.EXPORT_REQUESTED):
        assert world.deliver(event) is Outcome.ACK


def test_exporting_the_inbox_search_and_downloading_it(world, desk):
    client, agent, label = desk
    wanted = world.message([label], text="preciso de ajuda na escola")
    world.message([label], text="outra coisa")
    inbox = client.get("/inbox?q=escola").get_data(as_text=True)
    assert 'action="/exports"' in inbox and 'name="q" value="escola"' in inbox
    assert '<label for="export-format">' in inbox
    token = csrf(client, "/inbox?q=escola")
    form = {"csrf_token": token, "kind": "messages", "folder": "inbox", "q": "escola"}
    asked = client.post("/exports", data=form | {"format": "csv", "from": "2026-01-01"})
    assert asked.status_code == 302 and asked.headers["Location"].endswith("/exports")
    [requested] = world.events(ev.EXPORT_REQUESTED)
    waiting = client.get("/exports").get_data(as_text=True)
    assert REFRESH in waiting and "Waiting" in waiting and "Export requested" in waiting
    built(world)
    page = client.get("/exports").get_data(as_text=True)
    assert REFRESH not in page and "Ready" in page and "Download" in page
    download = client.get(f"/exports/{requested.data['export_id']}/file")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment; filename=messages-")
    rows = list(csv.reader(io.StringIO(download.data.decode("utf-8-sig"))))
    assert [row[0] for row in rows[1:]] == [wanted]
    download.close()
    notifications = client.get("/notifications").get_data(as_text=True)
    assert "Your export is ready to download" in notifications
    [told] = world.ok(world.get(agent, "/api/v1/notifications"))["items"]
    read = client.post(f"/notifications/{told['id']}/read", data={"csrf_token": token})
    assert read.status_code == 302 and read.headers["Location"].endswith("/exports")


def test_the_sent_folder_exports_replies_and_the_case_list_its_cases(world, desk):
    client, _agent, _label = desk
    sent = client.get("/inbox/sent").get_data(as_text=True)
    assert 'name="kind" value="replies"' in sent
    cases = client.get("/cases?state=closed").get_data(as_text=True)
    assert 'name="kind" value="cases"' in cases and 'name="state" value="closed"' in cases
    token = csrf(client, "/cases")
    form = {"csrf_token": token, "kind": "cases", "state": "closed", "format": "xlsx"}
    assert client.post("/exports", data=form).status_code == 302
    [requested] = world.events(ev.EXPORT_REQUESTED)
    assert requested.data["kind"] == "cases" and requested.data["format"] == "xlsx"
    built(world)
    assert "Ready" in client.get("/exports").get_data(as_text=True)


def test_the_export_form_needs_its_csrf_token_and_a_known_kind(world, desk):
    client, _agent, _label = desk
    refused = client.post("/exports", data={"kind": "messages", "format": "csv"})
    assert refused.status_code == 403
    token = csrf(client, "/inbox")
    odd = client.post("/exports", data={"csrf_token": token, "kind": "people", "format": "csv"})
    assert odd.status_code == 302 and world.events(ev.EXPORT_REQUESTED) == []
    unlabelled = {"csrf_token": token, "kind": "messages", "format": "csv", "folder": "unlabelled"}
    client.post("/exports", data=unlabelled)  # an agent has no unlabelled folder
    assert world.events(ev.EXPORT_REQUESTED) == []
    assert "That could not be done." in client.get("/exports").get_data(as_text=True)


def test_another_users_export_is_not_found(world, desk):
    client, _agent, label = desk
    world.message([label])
    export = world.export(world.admin, "messages", "csv")
    assert client.get(f"/exports/{export['id']}/file").status_code == 404
    assert export["id"] not in client.get("/exports").get_data(as_text=True)

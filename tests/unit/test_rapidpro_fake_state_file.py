"""The contract fake's optional state file: what the API changed is there after a restart."""

from __future__ import annotations

import json

from fakes.rapidpro.app import create_app
from fakes.rapidpro.seed import DEMO_CONTACT_AMINA, DEMO_FLOW_ACTIVATE, DEMO_GROUP_BOT, DEMO_TOKEN

AUTH = {"Authorization": f"Token {DEMO_TOKEN}"}


def groups_of_amina(client) -> set[str]:
    answer = client.get(f"/api/v2/contacts.json?uuid={DEMO_CONTACT_AMINA}", headers=AUTH)
    [contact] = answer.get_json()["results"]
    return {group["name"] for group in contact["groups"]}


def start_followup(client) -> dict:
    answer = client.post(
        "/api/v2/flow_starts.json",
        json={"flow": DEMO_FLOW_ACTIVATE, "contacts": [DEMO_CONTACT_AMINA], "params": {"n": 1}},
        headers=AUTH,
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.get_json()


def test_changes_survive_a_restart_and_ids_go_on(tmp_path):
    path = tmp_path / "fake.json"
    first = create_app(seed="demo", state_file=path).test_client()
    assert path.exists()  # written at start, so a restart does not seed again
    removed = first.post(
        "/api/v2/contact_actions.json",
        json={"contacts": [DEMO_CONTACT_AMINA], "action": "remove", "group": DEMO_GROUP_BOT},
        headers=AUTH,
    )
    assert removed.status_code == 204
    started = start_followup(first)

    again = create_app(seed="demo", state_file=path).test_client()
    assert "Bot" not in groups_of_amina(again)
    [kept] = again.get("/api/v2/flow_starts.json", headers=AUTH).get_json()["results"]
    assert kept == started
    assert start_followup(again)["id"] == started["id"] + 1  # counters are kept too


def test_without_a_state_file_a_new_app_starts_from_the_seed(tmp_path):
    first = create_app(seed="demo").test_client()
    first.post(
        "/api/v2/contact_actions.json",
        json={"contacts": [DEMO_CONTACT_AMINA], "action": "remove", "group": DEMO_GROUP_BOT},
        headers=AUTH,
    )
    assert "Bot" in groups_of_amina(create_app(seed="demo").test_client())
    assert list(tmp_path.iterdir()) == []


def test_reads_do_not_write_the_file(tmp_path):
    path = tmp_path / "fake.json"
    client = create_app(seed="demo", state_file=path).test_client()
    path.write_text(json.dumps(json.loads(path.read_text())))  # another layout: a rewrite shows
    before = path.read_text()
    groups_of_amina(client)
    assert path.read_text() == before
    start_followup(client)
    assert path.read_text() != before

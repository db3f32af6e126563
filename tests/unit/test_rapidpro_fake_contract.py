"""The RapidPro API v2 contract fake, checked with the real ``rapidpro-python`` client, and its
webhook emitter checked against a small local receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from flask import Flask, jsonify, request
from temba_client.exceptions import (
    TembaBadRequestError,
    TembaRateExceededError,
    TembaTokenError,
)
from temba_client.v2 import TembaClient

from fakes.rapidpro import (
    DEMO_CONTACT_AMINA,
    DEMO_CONTACT_BRIAN,
    DEMO_CONTACT_CHLOE,
    DEMO_FLOW_ACTIVATE,
    DEMO_FLOW_POLL,
    DEMO_GROUP_ADULTS,
    DEMO_GROUP_BOT,
    DEMO_LABEL,
    DEMO_POLL_WAIT_NODE,
    DEMO_TOKEN,
    create_app,
    demo_seed,
)
from fakes.rapidpro.webhooks import WebhookContext, build_editor_body
from tests.fakes_server import FakeControl, serve_app

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fake:
    url: str
    control: FakeControl
    client: TembaClient


@pytest.fixture
def fake() -> Iterator[Fake]:
    with serve_app(create_app(seed="demo", page_size=3)) as url:
        yield Fake(url, FakeControl(url), TembaClient(url, DEMO_TOKEN))


def members(fake: Fake, group: str) -> list[str]:
    [found] = [g for g in fake.control.state("demo")["groups"] if g["uuid"] == group]
    return found["members"]


def test_contacts_are_paged_with_cursors(fake: Fake) -> None:
    for n in range(4):
        fake.control.add("demo", "contacts", {"name": f"Extra {n}", "urns": [f"tel:+1{n}"]})

    batches = list(fake.client.get_contacts().iterfetches())

    assert [len(batch) for batch in batches] == [3, 3, 2]
    names = [c.name for batch in batches for c in batch]
    assert names[-4:] == ["David", "Chloe", "Brian", "Amina"]  # newest first
    assert len(set(names)) == 8
    pages = fake.control.requests(endpoint="contacts")
    assert [bool(p["query"].get("cursor")) for p in pages] == [False, True, True]


def test_contact_fields_and_group_filter(fake: Fake) -> None:
    [amina] = fake.client.get_contacts(uuid=DEMO_CONTACT_AMINA).all()
    assert (amina.name, amina.status, amina.language) == ("Amina", "active", "eng")
    assert amina.urns == ["tel:+256700000001"]
    assert amina.fields == {"age": "19", "district": "Kampala"}
    assert [g.name for g in amina.groups] == ["Bot", "U-Reporters", "Adults"]
    assert amina.created_on.tzinfo is not None

    in_bot = fake.client.get_contacts(group="Bot").all()
    assert [c.uuid for c in in_bot] == [DEMO_CONTACT_AMINA]
    assert fake.client.get_contacts(group=DEMO_GROUP_ADULTS).all()[-1].uuid == DEMO_CONTACT_AMINA


def test_groups_and_flows(fake: Fake) -> None:
    groups = {g.name: g for g in fake.client.get_groups().all()}
    assert set(groups) == {"Bot", "U-Reporters", "Adults"}
    assert (groups["Bot"].uuid, groups["Bot"].query, groups["Bot"].count) == (
        DEMO_GROUP_BOT,
        None,
        1,
    )
    assert groups["Adults"].query == "age >= 18"
    assert groups["Adults"].system is False

    flows = {f.name: f for f in fake.client.get_flows().all()}
    assert flows["U-Report Poll"].uuid == DEMO_FLOW_POLL
    assert flows["Activate chat"].uuid == DEMO_FLOW_ACTIVATE
    assert flows["Activate chat"].archived is False


def test_labels_can_be_created_and_listed(fake: Fake) -> None:
    created = fake.client.create_label("Urgent")

    labels = {label.name: label for label in fake.client.get_labels().all()}
    assert labels["Urgent"].uuid == created.uuid
    assert labels["Counselling"].uuid == DEMO_LABEL
    assert labels["Counselling"].count == 0
    with pytest.raises(TembaBadRequestError) as caught:
        fake.client.create_label("urgent")
    assert caught.value.errors == {"name": ["This field must be unique."]}


def test_bulk_group_actions_and_interrupt(fake: Fake) -> None:
    fake.client.bulk_remove_contacts([DEMO_CONTACT_AMINA], DEMO_GROUP_BOT)
    assert members(fake, DEMO_GROUP_BOT) == []

    fake.client.bulk_add_contacts([DEMO_CONTACT_AMINA, DEMO_CONTACT_BRIAN], "Bot")  # by name
    assert members(fake, DEMO_GROUP_BOT) == sorted([DEMO_CONTACT_AMINA, DEMO_CONTACT_BRIAN])

    fake.client.create_flow_start(DEMO_FLOW_POLL, contacts=[DEMO_CONTACT_BRIAN])
    fake.client.bulk_interrupt_contacts([DEMO_CONTACT_BRIAN])
    [brian] = fake.client.get_contacts(uuid=DEMO_CONTACT_BRIAN).all()
    assert brian.flow is None


def test_bulk_actions_validate_like_rapidpro(fake: Fake) -> None:
    too_many = [f"00000000-0000-4000-8000-{n:012d}" for n in range(101)]
    with pytest.raises(TembaBadRequestError) as caught:
        fake.client.bulk_add_contacts(too_many, DEMO_GROUP_BOT)
    assert caught.value.errors == {"contacts": ["Ensure this field has no more than 100 elements."]}

    with pytest.raises(TembaBadRequestError) as caught:
        fake.client.bulk_add_contacts([DEMO_CONTACT_AMINA], DEMO_GROUP_ADULTS)
    assert caught.value.errors == {"group": ["Contact group must not be query based: Adults"]}

    with pytest.raises(TembaBadRequestError) as caught:
        fake.client.bulk_remove_contacts(["nobody"], DEMO_GROUP_BOT)
    assert caught.value.errors == {"contacts": ["No such object: nobody"]}

    response = requests.post(
        f"{fake.url}/api/v2/contact_actions.json",
        json={"contacts": [DEMO_CONTACT_AMINA], "action": "add"},
        headers={"Authorization": f"Token {DEMO_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ['For action "add" you should also specify a group']
    }


def test_messages_and_broadcasts(fake: Fake) -> None:
    message = fake.client.create_message(DEMO_CONTACT_AMINA, "We hear you.", [])
    assert (message.direction, message.status, message.text) == ("out", "queued", "We hear you.")
    assert message.contact.uuid == DEMO_CONTACT_AMINA

    broadcast = fake.client.create_broadcast("Thanks!", contacts=[DEMO_CONTACT_BRIAN])
    assert [c.uuid for c in broadcast.contacts] == [DEMO_CONTACT_BRIAN]

    outgoing = fake.control.state("demo")["outgoing"]
    assert [(m["contact"]["uuid"], m["text"]) for m in outgoing] == [
        (DEMO_CONTACT_AMINA, "We hear you."),
        (DEMO_CONTACT_BRIAN, "Thanks!"),
    ]
    assert isinstance(outgoing[0]["id"], int)
    fetched = fake.client.get_messages(uuid=message.uuid).all()
    assert [m.text for m in fetched] == ["We hear you."]


def test_flow_start_records_params(fake: Fake) -> None:
    params = {"case": {"id": 12, "assignee": {"id": 4, "name": "Partner"}, "opened_on": "t"}}

    start = fake.client.create_flow_start(
        DEMO_FLOW_ACTIVATE, contacts=[DEMO_CONTACT_AMINA], restart_participants=True, params=params
    )

    assert start.params == params
    assert start.restart_participants is True  # the client sends 1; the fake reads a boolean
    assert [s.uuid for s in fake.client.get_flow_starts().all()] == [start.uuid]
    [recorded] = fake.control.state("demo")["flow_starts"]
    assert (recorded["flow"]["uuid"], recorded["params"]) == (DEMO_FLOW_ACTIVATE, params)


def test_message_labels_and_archiving(fake: Fake) -> None:
    first = fake.control.add("demo", "messages", {"contact": DEMO_CONTACT_AMINA, "text": "one"})
    second = fake.control.add("demo", "messages", {"contact": DEMO_CONTACT_AMINA, "text": "two"})
    ids = [first["id"], second["id"]]

    fake.client.bulk_label_messages(ids, label=DEMO_LABEL)
    fake.client.bulk_label_messages([second["id"]], label_name="Follow up")  # created on the fly
    fake.client.bulk_archive_messages(ids)
    fake.client.bulk_restore_messages([first["id"]])

    messages = fake.control.state("demo")["messages"]
    assert [[label["name"] for label in m["labels"]] for m in messages] == [
        ["Counselling"],
        ["Counselling", "Follow up"],
    ]
    assert [m["archived"] for m in messages] == [False, True]
    assert {label.name: label.count for label in fake.client.get_labels().all()} == {
        "Counselling": 2,
        "Follow up": 1,
    }
    response = requests.post(
        f"{fake.url}/api/v2/message_actions.json",
        json={"messages": [first["id"], 424242], "action": "archive"},
        headers={"Authorization": f"Token {DEMO_TOKEN}"},
        timeout=10,
    )
    assert (response.status_code, response.json()) == (200, {"failures": [424242]})


def test_bad_token_and_rate_limit_raise_the_clients_errors(fake: Fake) -> None:
    with pytest.raises(TembaTokenError):
        TembaClient(fake.url, "not-the-token").get_groups().all()
    response = requests.get(f"{fake.url}/api/v2/groups.json", timeout=10)
    assert response.status_code == 403

    fake.control.settings("demo", rate_limit={"requests": 1, "window": 120})
    fake.client.get_org()
    with pytest.raises(TembaRateExceededError) as caught:
        fake.client.get_org()
    assert 1 <= caught.value.retry_after <= 120


def test_faults_are_injected_and_cleared(fake: Fake) -> None:
    fake.control.inject_fault("demo", status=503, count=None, path="groups")
    url = f"{fake.url}/api/v2/groups.json"
    headers = {"Authorization": f"Token {DEMO_TOKEN}"}
    assert requests.get(url, headers=headers, timeout=10).status_code == 503
    assert requests.get(f"{fake.url}/api/v2/flows.json", headers=headers, timeout=10).ok
    fake.control.clear_faults("demo")
    assert requests.get(url, headers=headers, timeout=10).status_code == 200


# -- webhooks ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    app = Flask(__name__)
    calls: list[dict[str, Any]] = []

    @app.post("/ingest")
    def ingest():  # type: ignore[no-untyped-def]
        calls.append({"headers": dict(request.headers), "body": request.get_data()})
        return jsonify(accepted=True, case=41), 202

    with serve_app(app) as url:
        yield Receiver(f"{url}/ingest", calls)


def emit(fake: Fake, receiver: Receiver, shape: str, **extra: Any) -> dict[str, Any]:
    body = {
        "text": "I need help",
        "flow": DEMO_FLOW_POLL,
        "node": DEMO_POLL_WAIT_NODE,
        "shape": shape,
        "url": receiver.url,
        "headers": {"Authorization": "Token ingest-secret"},
        **extra,
    }
    return fake.control.send("demo", DEMO_CONTACT_AMINA, **body)


def assert_mailroom_headers(call: dict[str, Any], mode: str = "normal") -> None:
    assert call["headers"]["User-Agent"].startswith("Mailroom/")
    assert call["headers"]["X-Mailroom-Mode"] == mode
    assert call["headers"]["Authorization"] == "Token ingest-secret"


def test_emit_editor_shape_without_content_type(fake: Fake, receiver: Receiver) -> None:
    result = emit(fake, receiver, "editor")

    assert (result["status"], result["body"]) == (202, {"accepted": True, "case": 41})
    [call] = receiver.calls
    assert_mailroom_headers(call)
    assert "Content-Type" not in call["headers"]
    body = json.loads(call["body"])
    assert body == {
        "contact": {"uuid": DEMO_CONTACT_AMINA, "name": "Amina", "urn": "tel:+256700000001"},
        "flow": {"uuid": DEMO_FLOW_POLL, "name": "U-Report Poll"},
        "results": {"message": {"value": "I need help", "category": "All Responses"}},
    }
    stored = fake.client.get_messages(uuid=result["message"]["uuid"]).all()
    assert [(m.text, m.direction) for m in stored] == [("I need help", "in")]
    assert isinstance(result["message"]["id"], int)


def test_emit_resthook_shape(fake: Fake, receiver: Receiver) -> None:
    first = emit(fake, receiver, "resthook")
    second = emit(fake, receiver, "resthook", text="still there?")

    assert receiver.calls[0]["headers"]["Content-Type"] == "application/json"
    assert_mailroom_headers(receiver.calls[0])
    body = json.loads(receiver.calls[0]["body"])
    assert set(body) == {"contact", "flow", "path", "results", "run", "input", "channel"}
    assert body["flow"] == {"uuid": DEMO_FLOW_POLL, "name": "U-Report Poll", "revision": 1}
    assert body["path"][-1]["node_uuid"] == DEMO_POLL_WAIT_NODE
    assert body["input"]["uuid"] == first["message"]["uuid"]
    assert body["input"]["type"] == "msg"
    assert body["input"]["urn"] == {"scheme": "tel", "path": "+256700000001", "display": None}
    assert body["results"]["message"]["node_uuid"] == DEMO_POLL_WAIT_NODE
    assert body["results"]["message"]["input"] == "I need help"
    assert body["run"]["uuid"] == first["run"]
    assert body["input"]["created_on"].endswith("Z")

    again = json.loads(receiver.calls[1]["body"])
    assert again["run"]["uuid"] == body["run"]["uuid"]  # same run, new message
    assert again["input"]["uuid"] == second["message"]["uuid"] != first["message"]["uuid"]


def test_emit_upartners_shape(fake: Fake, receiver: Receiver) -> None:
    emit(fake, receiver, "upartners")

    [call] = receiver.calls
    assert_mailroom_headers(call)
    body = json.loads(call["body"])
    assert body["node"] == {"uuid": DEMO_POLL_WAIT_NODE}
    assert {"uuid": DEMO_GROUP_BOT, "name": "Bot"} in body["contact"]["groups"]
    assert body["contact"]["fields"] == {"age": "19", "district": "Kampala"}
    assert body["input"]["text"] == "I need help"


def test_emit_legacy_form_shape(fake: Fake, receiver: Receiver) -> None:
    result = emit(fake, receiver, "legacy_form")

    [call] = receiver.calls
    assert_mailroom_headers(call)
    assert call["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    form = {key: values[0] for key, values in parse_qs(call["body"].decode()).items()}
    assert form["text"] == "I need help"
    assert form["contact"] == DEMO_CONTACT_AMINA
    assert form["flow_uuid"] == DEMO_FLOW_POLL
    assert form["step"] == DEMO_POLL_WAIT_NODE
    assert form["phone"] == "+256700000001"
    assert form["run"].isdigit() and form["channel"].isdigit()
    assert json.loads(form["values"])[0]["value"] == "I need help"
    assert json.loads(form["steps"])[-1]["node"] == DEMO_POLL_WAIT_NODE
    assert result["status"] == 202


def test_emit_simulation_stores_no_message(fake: Fake, receiver: Receiver) -> None:
    result = emit(fake, receiver, "upartners", simulation=True)

    assert_mailroom_headers(receiver.calls[0], mode="simulation")
    assert result["message"]["id"] is None
    assert fake.control.state("demo")["messages"] == []


def test_emit_keeps_telegram_display_and_reports_unreachable_ingest(
    fake: Fake, receiver: Receiver
) -> None:
    fake.control.send("demo", DEMO_CONTACT_CHLOE, text="hi", shape="editor", url=receiver.url)
    assert json.loads(receiver.calls[0]["body"])["contact"]["urn"] == "telegram:100200300#chloe"

    failed = fake.control.send(
        "demo", DEMO_CONTACT_CHLOE, text="hi", url="http://127.0.0.1:9/ingest"
    )
    assert failed["status"] is None and "ConnectionError" in failed["error"]


def test_builders_are_pure() -> None:
    context = WebhookContext(
        contact_uuid="c",
        contact_name=None,
        contact_urn="tel:+1",
        flow_uuid="f",
        flow_name="F",
        node_uuid="n",
        run_uuid="r",
        run_created_on="2024-01-01T00:00:00.000000Z",
    )
    assert build_editor_body(context) == build_editor_body(context)
    assert build_editor_body(context)[1] is None


def test_demo_seed_is_reusable() -> None:
    first, second = demo_seed(), demo_seed()
    first["contacts"].clear()
    assert len(second["contacts"]) == 4
    [bot] = [g for g in second["groups"] if g["name"] == "Bot"]
    in_bot = [c["name"] for c in second["contacts"] if DEMO_GROUP_BOT in c["groups"]]
    assert (bot["uuid"], in_bot) == (DEMO_GROUP_BOT, ["Amina"])


def test_runs_as_its_own_process_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "fakes.rapidpro", "--port", "0", "--seed", "demo"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            first_line = process.stdout.readline()
            assert "contract fake" in first_line
            base_url = first_line.split()[-1]
            assert "demo-token" in process.stdout.readline()
            response = requests.get(
                f"{base_url}/api/v2/groups.json",
                headers={"Authorization": f"Token {DEMO_TOKEN}"},
                timeout=10,
            )
            assert response.status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

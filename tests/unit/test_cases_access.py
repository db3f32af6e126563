"""Authorisation on every endpoint, driven by the app's URL map, and anonymity of every answer.

A user of another org and a manager of another, restricted partner call every route and method
with the victim partner's ids: each answers 404 (or, for routes naming no object, nothing of the
victim's), and the victim's data is unchanged afterwards. A route added later fails these tests
until it gets sample values here.
"""

from __future__ import annotations

import json
import re

import pytest

from shared import events as ev
from shared.logs import URN_SCHEMES
from tests.cases_helpers import CONTACT_NAME, OTHER_ORG, PHONE, Person

PUBLIC = {"cases.openapi_document", "health.healthz", "health.readyz", "metrics", "static"}


@pytest.fixture
def victim(world):
    """Partner A (restricted to label A): its people, messages, a case, a note, a token."""
    label_a = world.label("A only")
    partner_a = world.partner("Partner A", restricted=True, labels=(label_a,))
    agent = world.user(partner_a, name="Vera Agent")
    manager = world.user(partner_a, role="manager", name="Vitor Manager")
    contact = "7c2a0000-0000-4000-8000-00000000beef"
    fields = {"name": CONTACT_NAME, "phone": PHONE, "age": "15"}
    in_case = world.message([label_a], contact=contact, text="socorro secreto", fields=fields)
    in_inbox = world.message([label_a], text="outra mensagem secreta", fields=fields)
    case = world.open_case(agent, in_case, partner_a, user=manager.id, summary="resumo secreto")
    world.ok(world.post(agent, f"/api/v1/cases/{case['id']}/notes", {"note": "nota secreta"}), 201)
    world.ok(world.post(agent, f"/api/v1/cases/{case['id']}/reply", {"text": "resposta"}), 201)
    token = world.ok(
        world.post(agent, f"/api/v1/users/{agent.id}/tokens", {"description": "spare"}), 201
    )
    notification = world.ok(world.get(manager, "/api/v1/notifications"))["items"][0]
    ref = world.ok(world.get(agent, f"/api/v1/messages/{in_inbox}"))["contact"]["ref"]
    answer = world.ok(
        world.post(
            world.admin,
            "/api/v1/answers",
            {"question": "pergunta secreta?", "answer": "resposta", "labels": [label_a]},
        ),
        201,
    )
    export = world.export(manager, "messages", "csv", folder="archived")
    assert export["state"] == "done" and export["progress"] == 1
    return {
        "answer": answer["id"],
        "label": label_a,
        "partner": partner_a,
        "agent": agent,
        "manager": manager,
        "message": in_inbox,
        "case_message": in_case,
        "case": case["id"],
        "token": token,
        "notification": notification["id"],
        "ref": ref,
        "export": export["id"],
    }


@pytest.fixture
def attackers(world):
    """The administrator of another org, and a manager of partner B (restricted to label B)."""
    other_admin = world.other_org(OTHER_ORG)
    label_b = world.label("B only")
    partner_b = world.partner("Partner B", restricted=True, labels=(label_b,))
    world.message([label_b])
    return {
        "other org admin": other_admin,
        "other partner manager": world.user(partner_b, role="manager"),
    }


def path_values(victim):
    return {
        "partner_id": victim["partner"],
        "user_id": victim["agent"].id,
        "token_id": victim["token"]["id"],
        "label_id": victim["label"],
        "message_id": victim["message"],
        "case_id": victim["case"],
        "notification_id": victim["notification"],
        "answer_id": victim["answer"],
        "export_id": victim["export"],
    }


def sample_body(victim, method, template):
    bodies = {
        ("PATCH", "/api/v1/org"): {"name": "Hijacked"},
        ("POST", "/api/v1/partners"): {"name": "Intruder"},
        ("PATCH", "/api/v1/partners/{partner_id}"): {"name": "Hijacked"},
        ("POST", "/api/v1/users"): {
            "name": "Mole",
            "email": "mole@x.example",
            "role": "agent",
            "partner": victim["partner"],
        },
        ("PATCH", "/api/v1/users/{user_id}"): {"active": False},
        ("POST", "/api/v1/users/{user_id}/tokens"): {"description": "stolen"},
        ("POST", "/api/v1/users/{user_id}/sign-in-link"): {},
        ("POST", "/api/v1/labels"): {"name": "Intruder label"},
        ("PATCH", "/api/v1/labels/{label_id}"): {"active": False},
        ("POST", "/api/v1/messages/actions"): {
            "action": "archive",
            "messages": [victim["message"]],
        },
        ("POST", "/api/v1/messages/{message_id}/actions"): {"action": "flag"},
        ("POST", "/api/v1/messages/{message_id}/reply"): {"text": "gotcha"},
        ("POST", "/api/v1/messages/{message_id}/lock"): {},
        ("POST", "/api/v1/cases"): {
            "summary": "hijack",
            "partner": victim["partner"],
            "message": victim["message"],
        },
        ("POST", "/api/v1/cases/{case_id}/notes"): {"note": "x"},
        ("POST", "/api/v1/cases/{case_id}/reassign"): {"user": None},
        ("PUT", "/api/v1/cases/{case_id}/labels"): {"labels": []},
        ("PUT", "/api/v1/cases/{case_id}/summary"): {"summary": "Hijacked"},
        ("POST", "/api/v1/cases/{case_id}/reply"): {"text": "x"},
        ("POST", "/api/v1/cases/{case_id}/close"): {"note": "x"},
        ("POST", "/api/v1/cases/{case_id}/reopen"): {},
        ("PUT", "/api/v1/cases/{case_id}/watch"): {},
        ("POST", "/api/v1/notifications/read"): {},
        ("POST", "/api/v1/notifications/{notification_id}/read"): {},
        ("POST", "/api/v1/answers"): {"question": "Intruder?", "answer": "x"},
        ("POST", "/api/v1/answers/import"): {"csv": "question,answer\nIntruder?,x\n"},
        ("PATCH", "/api/v1/answers/{answer_id}"): {"question": "Hijacked?"},
        ("POST", "/api/v1/exports"): {"kind": "messages", "format": "csv"},
    }
    if method in ("GET", "DELETE"):
        return None
    assert (method, template) in bodies, f"add a sample body for {method} {template}"
    return bodies[(method, template)]


def routes(app):
    """(method, template, rule) of every non-public route, templates in OpenAPI form."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or rule.endpoint.startswith(("ui.", "ui_")):
            continue  # the pages sign in by session, not by token: tests/unit/test_ui_*.py
        template = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield method, template, rule


def secrets_of(victim):
    """What an attacker must never read: the victim's ids, texts and people."""
    return [
        victim["message"],
        victim["case_message"],
        victim["case"],
        victim["ref"],
        victim["label"],
        victim["token"]["id"],
        victim["notification"],
        victim["answer"],
        victim["export"],
        victim["agent"].id,
        victim["manager"].id,
        "secreto",
        "secreta",
        "Vera",
        "Vitor",
    ]


def test_every_endpoint_hides_other_orgs_and_other_partners_objects(world, victim, attackers):
    values = path_values(victim)
    before = snapshot(world, victim)
    outgoing_before = len(world.events(ev.OUTGOING_REQUESTED))
    checked = 0
    for who, attacker in attackers.items():
        for method, template, _ in routes(world.app):
            names = re.findall(r"{(\w+)}", template)
            assert all(n in values for n in names), f"add a victim value for {template}"
            path = template.format(**values)
            response = world.call(attacker, method, path, sample_body(victim, method, template))
            text = response.get_data(as_text=True)
            where = f"{who}: {method} {template} -> {response.status_code} {text[:200]}"
            if names:
                assert response.status_code == 404, where
            else:
                assert response.status_code < 500, where
            leaked = [s for s in secrets_of(victim) if s in text]
            assert not leaked, f"{where} leaks {leaked}"
            checked += 1
        for path, query in (
            ("/api/v1/messages", {"contact": victim["ref"]}),
            ("/api/v1/messages", {"label": victim["label"], "folder": "archived"}),
            ("/api/v1/cases", {"label": victim["label"]}),
            ("/api/v1/cases", {"contact": victim["ref"]}),
        ):
            assert world.ok(world.get(attacker, path, **query))["items"] == [], (who, query)
    assert checked > 80
    assert snapshot(world, victim) == before
    assert len(world.events(ev.OUTGOING_REQUESTED)) == outgoing_before
    # the same ids do reach the victim's objects: the 404s above were not typos
    for method, template, _ in routes(world.app):
        if method == "GET" and "{" in template:
            mine = "notification" in template or "export" in template
            owner = victim["manager"] if mine else world.admin
            assert world.call(owner, method, template.format(**values)).status_code == 200, template


def snapshot(world, victim):
    """Everything the attackers' calls could have changed, as the victim's admin sees it."""
    admin, manager = world.admin, victim["manager"]
    agent_tokens = world.ok(world.get(admin, f"/api/v1/users/{victim['agent'].id}/tokens"))
    return json.dumps(
        [
            world.ok(world.get(admin, f"/api/v1/messages/{victim['message']}")),
            world.ok(world.get(admin, f"/api/v1/messages/{victim['message']}/history")),
            world.ok(world.get(admin, f"/api/v1/cases/{victim['case']}")) | {"warning": None},
            world.ok(world.get(admin, f"/api/v1/cases/{victim['case']}/timeline")),
            world.ok(world.get(admin, f"/api/v1/labels/{victim['label']}")),
            world.ok(world.get(admin, f"/api/v1/partners/{victim['partner']}")),
            world.ok(world.get(admin, f"/api/v1/users/{victim['agent'].id}")),
            agent_tokens,
            world.ok(world.get(manager, "/api/v1/notifications")),
            world.ok(world.get(manager, "/api/v1/exports")),
            world.ok(world.get(admin, "/api/v1/org")),
            world.ok(world.get(admin, "/api/v1/users")),
            world.ok(world.get(admin, f"/api/v1/answers/{victim['answer']}")),
            world.ok(world.get(admin, "/api/v1/answers")),
        ],
        sort_keys=True,
    )


# --- anonymity ----------------------------------------------------------------------------------
URN = re.compile(r"\b(?:" + "|".join(URN_SCHEMES) + r"):")
PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
SAFE = [
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),  # uuids
    re.compile(r"\d{4}-\d{2}-\d{2}T[\d:.]+(?:[+-]\d{2}:\d{2}|Z)?"),  # timestamps
    re.compile(r'"\d{4}-\d{2}-\d{2}"'),  # days (statistics), as whole JSON strings
    re.compile(r'"\w+_seconds": ?\d+'),  # durations (statistics)
    re.compile(r"C-[0-9A-Z]{8,12}"),  # contact references
    re.compile(r'"next_cursor": ?"[^"]*"'),
]


def identifying(text: str) -> list[str]:
    for pattern in SAFE:
        text = pattern.sub("", text)
    return PHONE_LIKE.findall(text) + URN.findall(text) + re.findall(CONTACT_NAME, text)


def test_the_scanner_finds_what_it_looks_for():
    assert identifying(f'{{"x": "{PHONE}"}}') and identifying('"tel:+5511987654321"')
    assert identifying("5511987654321") and identifying(CONTACT_NAME)
    assert not identifying('{"at": "2026-11-21T10:00:00.123456+00:00", "count": 12}')
    assert not identifying('{"first": "2026-11-08", "last": "2026-12-07"}')
    assert identifying('{"note": "2026-11-08 11 98765"}')  # a day is safe only on its own


def partner_facing_answers(world, person, values):
    for method, template, _ in routes(world.app):
        if method == "GET":
            yield template, world.call(person, "GET", template.format(**values))
    for folder in ("inbox", "archived", "flagged", "sent"):
        yield folder, world.get(person, "/api/v1/messages", folder=folder)


def test_no_answer_carries_a_urn_phone_number_or_contact_name(world, victim):
    values = path_values(victim)
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"display_field": "age"}))
    scanned = 0
    for person in (victim["agent"], victim["manager"], world.admin):
        for where, response in partner_facing_answers(world, person, values):
            if response.status_code != 200:
                continue
            text = response.get_data(as_text=True)
            assert not identifying(text), (where, identifying(text))
            scanned += 1
    assert scanned > 30
    shown = world.ok(world.get(victim["agent"], f"/api/v1/messages/{victim['message']}"))
    # The org's chosen field only, and the language (none here: the engine gave none).
    assert shown["contact"] == {"ref": victim["ref"], "display": "15", "language": None}


def test_the_contact_field_is_hidden_until_the_org_chooses_one(world, victim):
    shown = world.ok(world.get(victim["agent"], f"/api/v1/messages/{victim['message']}"))
    assert shown["contact"]["display"] is None
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"display_field": "phone"}))
    shown = world.ok(world.get(victim["agent"], f"/api/v1/messages/{victim['message']}"))
    assert shown["contact"]["display"] == PHONE  # shown because the org chose to show it


def test_contact_references_are_stable_and_distinct_per_contact(world, victim):
    again = world.message([victim["label"]], contact="7c2a0000-0000-4000-8000-00000000beef")
    other = world.message([victim["label"]])
    agent = victim["agent"]
    case_ref = world.ok(world.get(agent, f"/api/v1/cases/{victim['case']}"))["contact"]["ref"]
    again_ref = world.ok(world.get(agent, f"/api/v1/messages/{again}"))["contact"]["ref"]
    other_ref = world.ok(world.get(agent, f"/api/v1/messages/{other}"))["contact"]["ref"]
    assert case_ref == again_ref != other_ref
    assert re.fullmatch(r"C-[0-9A-Z]{8}", case_ref)


def test_a_token_is_never_shown_again(world, victim):
    token = victim["token"]["token"]
    everything = "".join(
        response.get_data(as_text=True)
        for person in (victim["agent"], world.admin)
        for _, response in partner_facing_answers(world, person, path_values(victim))
    )
    assert token not in everything
    assert world.get(Person(victim["agent"].id, token, "x"), "/api/v1/me").status_code == 200

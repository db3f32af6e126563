"""The organization pages: inviting users with a one-time link, new links, deactivation, and
partners; who may see them (embedded default, Flask's test client)."""

from __future__ import annotations

import re

from tests.unit.test_ui_sign_in import browser, csrf, set_password


def admin_browser(world):
    client = browser(world)
    set_password(world, client, world.admin)
    return client


def test_an_administrator_invites_a_user_who_then_signs_in(world):
    partner = world.partner("Helpline")
    client = admin_browser(world)
    token = csrf(client, "/org/users")
    answer = client.post(
        "/org/users",
        data={
            "csrf_token": token,
            "name": "Nova",
            "email": "nova@helpline.example",
            "role": "agent",
            "partner": partner,
        },
    )
    assert answer.status_code == 200
    link = re.search(r"<code>(http://[^<]+/set-password/[^<]+)</code>", answer.text).group(1)
    newcomer = browser(world)
    path = link.split("localhost", 1)[1]
    assert newcomer.get(path).status_code == 200 and "Nova" in newcomer.get(path).text
    assert "nova@helpline.example" in client.get("/org/users").text


def test_deactivating_from_the_page_ends_the_users_sessions(world):
    partner = world.partner("Helpline")
    agent = world.user(partner, name="Ana")
    agent_client = browser(world)
    set_password(world, agent_client, agent)
    client = admin_browser(world)
    token = csrf(client, "/org/users")
    assert (
        client.post(f"/org/users/{agent.id}/deactivate", data={"csrf_token": token}).status_code
        == 302
    )
    assert "Deactivated" in client.get("/org/users").text
    assert agent_client.get("/inbox").status_code == 302
    again = client.post(f"/org/users/{agent.id}/link", data={"csrf_token": token})
    assert "/set-password/" not in again.text  # no link for a deactivated user


def test_bad_invitations_change_nothing(world):
    client = admin_browser(world)
    token = csrf(client, "/org/users")
    before = client.get("/org/users").text.count('class="message')
    bad = client.post(
        "/org/users", data={"csrf_token": token, "name": "X", "email": "nope", "role": "agent"}
    )
    assert bad.status_code == 400 and "valid email" in bad.text
    assert client.get("/org/users").text.count('class="message') == before


def test_partners_page_and_who_sees_the_organization_pages(world):
    label = world.label("violence")
    client = admin_browser(world)
    token = csrf(client, "/org/partners")
    added = client.post(
        "/org/partners",
        data={"csrf_token": token, "name": "Helpline", "restricted": "on", "labels": [label]},
    )
    assert added.status_code == 302
    page = client.get("/org/partners").text
    assert "Helpline" in page and "Restricted to its labels" in page and "violence" in page
    partner = world.ok(world.get(world.admin, "/api/v1/partners"))["items"][0]["id"]
    agent, manager = world.user(partner, name="Ana"), world.user(partner, role="manager")
    agent_client, manager_client = browser(world), browser(world)
    set_password(world, agent_client, agent)
    set_password(world, manager_client, manager)
    assert agent_client.get("/org/users").status_code == 404
    assert manager_client.get("/org/users").status_code == 200
    assert manager_client.get("/org/partners").status_code == 404
    assert "Organization" not in agent_client.get("/inbox").text


def with_catalog(world):
    from shared import events as ev
    from tests.cases_helpers import at, flowbridge_event

    world.deliver(
        flowbridge_event(
            ev.CATALOG_SYNCED,
            groups=[
                {"uuid": "g-bot", "name": "Bot"},
                {"uuid": "g-smart", "name": "Teens", "smart": True},
            ],
            flows=[{"uuid": "f-1", "name": "Activate chat"}],
            synced_on=at(0).isoformat(),
        )
    )


def test_labels_bound_to_a_group_a_step_or_keywords_and_a_bad_rule(world):
    from shared import events as ev

    with_catalog(world)
    client = admin_browser(world)
    token = csrf(client, "/org/labels")
    page = client.get("/org/labels").text
    assert "Bot" in page and "Activate chat" in page
    by_group = client.post(
        "/org/labels",
        data={"csrf_token": token, "name": "Bot talk", "description": "d", "group": "g-bot"},
    )
    assert by_group.status_code == 302
    by_step = client.post(
        "/org/labels",
        data={"csrf_token": token, "name": "Poll", "flow": "f-1", "node": "n-42", "keywords": ""},
    )
    assert by_step.status_code == 302
    created = {e.data["name"]: e.data["rule"] for e in world.events(ev.LABEL_CREATED)}
    assert created["Bot talk"] == [{"type": "groups", "quantifier": "any", "groups": ["g-bot"]}]
    assert created["Poll"] == [{"type": "step", "steps": [{"flow": "f-1", "node": "n-42"}]}]
    bad = client.post(
        "/org/labels",
        data={"csrf_token": token, "name": "Bad", "advanced": '[{"type": "moon"}]'},
    )
    assert bad.status_code == 400 and "The rule is not valid" in bad.text
    assert "Bad" not in {e.data["name"] for e in world.events(ev.LABEL_CREATED)}


def test_properties_pick_suspend_groups_and_the_follow_up_flow(world):
    from shared import events as ev

    with_catalog(world)
    client = admin_browser(world)
    token = csrf(client, "/org/properties")
    page = client.get("/org/properties").text
    assert "/webhooks/unicef-br/flow" in page and "Teens" not in page  # no smart groups
    saved = client.post(
        "/org/properties",
        data={
            "csrf_token": token,
            "suspend_groups": ["g-bot"],
            "followup_flow": "f-1",
            "timezone": "Africa/Maputo",
            "warning_days": "7",
        },
    )
    assert saved.status_code == 302
    [update] = world.events(ev.ORG_UPDATED)[-1:]
    assert update.data["suspend_groups"] == ["g-bot"] and update.data["followup_flow"] == "f-1"
    bad = client.post("/org/properties", data={"csrf_token": token, "timezone": "Mars/Olympus"})
    assert bad.status_code == 400 and "timezone" in bad.text

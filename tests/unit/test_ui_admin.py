"""The organization pages: inviting users with a one-time link, new links, deactivation, and
partners; who may see them (embedded default, Flask's test client)."""

from __future__ import annotations

import re

import pytest

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


def test_the_label_form_takes_hyphenated_keywords_as_casepro_did(world):
    from shared import events as ev

    world.message(text="Minha AUTO-ESTIMA está baixa", contact="c-1")
    world.message(text="minha autoestima", contact="c-2")
    world.message(text="o posto de saúde fechou", contact="c-3")
    client = admin_browser(world)
    token = csrf(client, "/org/labels")
    assert 'id="keywords-hint"' in client.get("/org/labels").text
    form = {"csrf_token": token, "name": "Self", "keywords": "auto-estima, posto de saúde"}
    preview = client.post("/org/labels", data={**form, "action": "preview"})
    assert preview.status_code == 200 and "2 of the last 3 messages match" in preview.text
    assert "AUTO-ESTIMA" in preview.text and "minha autoestima" not in preview.text
    assert client.post("/org/labels", data=form).status_code == 302
    [created] = world.events(ev.LABEL_CREATED)
    assert created.data["rule"] == [
        {"type": "keywords", "quantifier": "any", "keywords": ["auto-estima", "posto de saúde"]}
    ]
    refused = client.post("/org/labels", data={**form, "name": "Bad", "keywords": "auto-"})
    assert refused.status_code == 400 and "joined by spaces or hyphens" in refused.text


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


# --- a label's page: change, deactivate, delete -------------------------------------------------
def test_a_label_is_changed_from_its_page_linked_from_the_list(world):
    from shared import events as ev

    label = world.label("violence")  # keywords: "ajuda"
    client = admin_browser(world)
    assert f'href="/org/labels/{label}"' in client.get("/org/labels").text
    page = client.get(f"/org/labels/{label}").text
    assert 'value="violence"' in page and 'value="ajuda"' in page  # the form, filled in
    token = csrf(client, f"/org/labels/{label}")
    saved = client.post(
        f"/org/labels/{label}",
        data={"csrf_token": token, "name": "Violence", "description": "d", "keywords": "socorro"},
    )
    assert saved.status_code == 302
    [update] = world.events(ev.LABEL_UPDATED)
    assert update.data["name"] == "Violence"
    assert update.data["rule"] == [
        {"type": "keywords", "quantifier": "any", "keywords": ["socorro"]}
    ]
    page = client.get(f"/org/labels/{label}").text
    assert 'value="Violence"' in page and 'value="socorro"' in page


def test_a_rule_the_simple_fields_cannot_say_is_shown_as_json(world):
    rule = [{"type": "word_count", "minimum": 3}]
    label = world.label("long", rule=rule)
    page = admin_browser(world).get(f"/org/labels/{label}").text
    assert "&#34;word_count&#34;" in page or "&quot;word_count&quot;" in page
    assert "<details open>" in page


def test_bad_label_changes_are_answered_inline_and_change_nothing(world):
    from shared import events as ev

    label = world.label("violence")
    world.label("taken")
    client = admin_browser(world)
    token = csrf(client, f"/org/labels/{label}")
    path = f"/org/labels/{label}"
    blank = client.post(path, data={"csrf_token": token, "name": " ", "keywords": "x"})
    assert blank.status_code == 400 and "Give the label a name." in blank.text
    bad_rule = client.post(
        path, data={"csrf_token": token, "name": "v", "advanced": '[{"type": "moon"}]'}
    )
    assert bad_rule.status_code == 400 and "The rule is not valid" in bad_rule.text
    assert "moon" in bad_rule.text  # the form keeps what was typed
    taken = client.post(path, data={"csrf_token": token, "name": "Taken", "keywords": "ajuda"})
    assert taken.status_code == 400 and "Another label already has that name." in taken.text
    assert world.events(ev.LABEL_UPDATED) == []


def test_deactivate_activate_and_delete_after_asking_again(world):
    from shared import events as ev

    label = world.label("violence")
    message = world.message([label])
    client = admin_browser(world)
    token = csrf(client, f"/org/labels/{label}")
    assert (
        client.post(f"/org/labels/{label}/deactivate", data={"csrf_token": token}).status_code
        == 302
    )
    assert world.events(ev.LABEL_UPDATED)[-1].data["active"] is False
    assert "Inactive" in client.get("/org/labels").text
    client.post(f"/org/labels/{label}/activate", data={"csrf_token": token})
    assert world.events(ev.LABEL_UPDATED)[-1].data["active"] is True
    unconfirmed = client.post(f"/org/labels/{label}/delete", data={"csrf_token": token})
    assert unconfirmed.status_code == 302 and world.events(ev.LABEL_DELETED) == []
    assert "Tick the box" in client.get(f"/org/labels/{label}").text
    deleted = client.post(
        f"/org/labels/{label}/delete", data={"csrf_token": token, "confirm": "yes"}
    )
    assert deleted.status_code == 302 and len(world.events(ev.LABEL_DELETED)) == 1
    assert client.get(f"/org/labels/{label}").status_code == 404
    shown = world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))
    assert shown["labels"] == []  # taken off the message, as the API's DELETE does


def test_only_administrators_see_a_label_or_partner_page(world):
    label = world.label("violence")
    partner = world.partner("Helpline")
    manager = world.user(partner, role="manager")
    client = browser(world)
    set_password(world, client, manager)
    token = csrf(client, "/org/users")
    assert client.get(f"/org/labels/{label}").status_code == 404
    assert client.get(f"/org/partners/{partner}").status_code == 404
    refused = client.post(
        f"/org/labels/{label}/delete", data={"csrf_token": token, "confirm": "yes"}
    )
    assert refused.status_code == 404
    refused = client.post(f"/org/partners/{partner}", data={"csrf_token": token, "name": "X"})
    assert refused.status_code == 404
    assert admin_browser(world).get(f"/org/labels/{label}").status_code == 200
    assert admin_browser(world).get("/org/labels/no-such-label").status_code == 404


# --- the preview of a rule ----------------------------------------------------------------------
def test_the_preview_lists_the_recent_messages_the_rule_matches(world):
    from shared import events as ev

    world.message(text="preciso de AJUDA agora", contact="c-1")
    world.message(text="bom dia", contact="c-2")
    world.message(text="ajuda, por favor", contact="c-3", simulation=True)
    client = admin_browser(world)
    token = csrf(client, "/org/labels")
    answer = client.post(
        "/org/labels",
        data={"csrf_token": token, "name": "", "keywords": "ajuda", "action": "preview"},
    )
    assert answer.status_code == 200
    assert "preciso de AJUDA agora" in answer.text and "bom dia" not in answer.text
    assert "por favor" not in answer.text  # simulations are left out
    assert "1 of the last 2 messages matches" in answer.text
    assert 'value="ajuda"' in answer.text  # the form keeps its values
    assert answer.text.count('class="contact"') == 1  # the pseudonym, and no URN:
    assert "+55" not in answer.text and "whatsapp:" not in answer.text
    assert world.events(ev.LABEL_CREATED) == []  # a preview saves nothing


def test_the_preview_on_a_labels_page_and_what_it_cannot_check(world):
    from shared import events as ev

    label = world.label("violence")
    world.message(text="socorro", fields={"state": "SP"})
    world.message(text="socorro", fields={"state": "RJ"})
    world.message(text="oi")
    client = admin_browser(world)
    token = csrf(client, f"/org/labels/{label}")
    rule = (
        '[{"type": "keywords", "quantifier": "any", "keywords": ["socorro"]},'
        ' {"type": "groups", "quantifier": "any", "groups": ["g-bot"]},'
        ' {"type": "field", "key": "state", "values": ["sp"]}]'
    )
    answer = client.post(
        f"/org/labels/{label}",
        data={"csrf_token": token, "name": "violence", "advanced": rule, "action": "preview"},
    )
    assert answer.status_code == 200
    assert "1 of the last 3 messages matches" in answer.text
    assert "Group conditions are not checked in the preview" in answer.text
    assert "latest known fields" in answer.text
    assert world.events(ev.LABEL_UPDATED) == []
    bad = client.post(
        f"/org/labels/{label}",
        data={"csrf_token": token, "name": "v", "advanced": "[1", "action": "preview"},
    )
    assert bad.status_code == 400 and "The rule is not valid" in bad.text


def test_preview_rule_in_the_service_layer(world):
    from services.cases.domain import Forbidden
    from services.cases.handlers import labels
    from services.cases.handlers.access import authenticate

    admin = authenticate(world.store, world.admin.token)
    for number in range(30):
        world.message(text=f"ajuda {number}")
    world.message(text="nada")
    rule = [{"type": "keywords", "quantifier": "any", "keywords": ["ajuda"]}]
    preview = labels.preview_rule(world.store, admin, rule, examine=500, show=20)
    assert (preview.examined, preview.matched, len(preview.shown)) == (31, 30, 20)
    assert preview.shown[0].text == "ajuda 29"  # newest first
    assert labels.preview_rule(world.store, admin, [], examine=500).matched == 0
    only_groups = [{"type": "groups", "quantifier": "any", "groups": ["g"]}]
    assert labels.preview_rule(world.store, admin, only_groups).matched == 0
    assert labels.preview_rule(world.store, admin, only_groups).unchecked == ["groups"]
    agent = authenticate(world.store, world.user(world.partner()).token)
    with pytest.raises(Forbidden):
        labels.preview_rule(world.store, agent, rule)


# --- rules in words -----------------------------------------------------------------------------
def test_rules_in_words_in_the_pages_language(world):
    with_catalog(world)
    world.label(
        "mixed",
        rule=[
            {"type": "groups", "quantifier": "any", "groups": ["g-bot"]},
            {"type": "keywords", "quantifier": "all", "keywords": ["ajuda", "agora"]},
            {"type": "step", "steps": [{"flow": "f-1", "node": "n-1"}]},
        ],
    )
    client = admin_browser(world)
    english = client.get("/org/labels").text
    assert "the contact is in the group “Bot”" in english  # the group's name, not its uuid
    assert "“ajuda” and “agora”" in english
    assert "of the flow “Activate chat”" in english
    french = client.get("/org/labels", headers={"Accept-Language": "fr"}).text
    assert "le contact est dans le groupe «\u00a0Bot\u00a0»" in french  # French quotes
    assert "«\u00a0ajuda\u00a0» et «\u00a0agora\u00a0»" in french  # and its way of listing
    assert "the contact is in the group" not in french


def test_rule_words_of_every_kind_of_test(world):
    from services.cases.ui import rule_words

    with world.app.test_request_context("/"):
        describe = rule_words.describe
        assert describe([]) == "Never matches: the rule has no conditions."
        assert "at least 3 words" in describe([{"type": "word_count", "minimum": 3}])
        assert "at least 1 word." in describe([{"type": "word_count", "minimum": 1}])
        field = [{"type": "field", "key": "state", "values": ["SP", "RJ"]}]
        assert "the contact field state is one of “SP” or “RJ”" in describe(field)
        none = [{"type": "keywords", "quantifier": "none", "keywords": ["spam"]}]
        assert "it does not have the keyword “spam”" in describe(none)
        steps = [
            {"type": "step", "steps": [{"flow": "a", "node": "b"}, {"flow": "c", "node": "d"}]}
        ]
        assert "one of 2 flow steps" in describe(steps)
        groups = [{"type": "groups", "quantifier": "none", "groups": ["g1", "g2"]}]
        assert describe(groups, {"g1": "Bot"}) == (
            "A message gets this label when the contact is in none of the groups “Bot” or “g2”."
        )


# --- a partner's page ---------------------------------------------------------------------------
def test_a_partner_is_changed_from_its_page(world):
    label = world.label("violence")
    partner = world.partner("Helpline")
    world.partner("Shelter")
    client = admin_browser(world)
    assert f'href="/org/partners/{partner}"' in client.get("/org/partners").text
    token = csrf(client, f"/org/partners/{partner}")
    assert 'value="Helpline"' in client.get(f"/org/partners/{partner}").text
    saved = client.post(
        f"/org/partners/{partner}",
        data={
            "csrf_token": token,
            "name": "Helpline 24h",
            "description": "nights too",
            "restricted": "on",
            "labels": [label],
        },
    )
    assert saved.status_code == 302
    shown = world.ok(world.get(world.admin, f"/api/v1/partners/{partner}"))
    assert shown["name"] == "Helpline 24h" and shown["description"] == "nights too"
    assert shown["restricted"] is True and [ref["id"] for ref in shown["labels"]] == [label]
    page = client.get(f"/org/partners/{partner}").text
    assert f'value="{label}" checked' in page
    blank = client.post(f"/org/partners/{partner}", data={"csrf_token": token, "name": ""})
    assert blank.status_code == 400 and "Give the partner a name." in blank.text
    taken = client.post(f"/org/partners/{partner}", data={"csrf_token": token, "name": "Shelter"})
    assert taken.status_code == 400 and "Another partner already has that name." in taken.text
    unknown = client.post(
        f"/org/partners/{partner}", data={"csrf_token": token, "name": "X", "labels": ["nope"]}
    )
    assert unknown.status_code == 200 and "That could not be done." in unknown.text
    assert world.ok(world.get(world.admin, f"/api/v1/partners/{partner}")) == shown


# --- a user's role and partner ------------------------------------------------------------------
def role_and_partner(world, person) -> tuple[str, str | None]:
    shown = world.ok(world.get(world.admin, f"/api/v1/users/{person.id}"))
    return shown["role"], (shown["partner"] or {}).get("id")


def test_an_administrator_changes_a_users_role_and_partner(world):
    helpline, shelter = world.partner("Helpline"), world.partner("Shelter")
    agent = world.user(helpline, name="Ana")
    client = admin_browser(world)
    token = csrf(client, "/org/users")
    assert f'id="role-{agent.id}"' in client.get("/org/users").text
    changed = client.post(
        f"/org/users/{agent.id}/change",
        data={"csrf_token": token, "role": "manager", "partner": shelter},
    )
    assert changed.status_code == 302 and "Saved." in client.get("/org/users").text
    assert role_and_partner(world, agent) == ("manager", shelter)
    promoted = client.post(
        f"/org/users/{agent.id}/change",
        data={"csrf_token": token, "role": "administrator", "partner": ""},
    )
    assert promoted.status_code == 302
    assert role_and_partner(world, agent) == ("administrator", None)


def test_role_changes_the_api_refuses_are_refused_on_the_page(world):
    helpline, shelter = world.partner("Helpline"), world.partner("Shelter")
    agent = world.user(helpline, name="Ana")
    client = admin_browser(world)
    token = csrf(client, "/org/users")
    itself = client.post(
        f"/org/users/{world.admin.id}/change",
        data={"csrf_token": token, "role": "agent", "partner": helpline},
    )
    assert itself.status_code == 302
    assert "You cannot change your own role or partner." in client.get("/org/users").text
    assert role_and_partner(world, world.admin) == ("administrator", None)
    no_partner = client.post(
        f"/org/users/{agent.id}/change", data={"csrf_token": token, "role": "agent", "partner": ""}
    )
    assert no_partner.status_code == 302
    assert "managers and agents to one" in client.get("/org/users").text
    bad_role = client.post(
        f"/org/users/{agent.id}/change", data={"csrf_token": token, "role": "king"}
    )
    assert bad_role.status_code == 302
    assert "Choose a role and a partner" in client.get("/org/users").text
    assert role_and_partner(world, agent) == ("agent", helpline)
    # a partner's manager: only their partner's users, and only the roles the API lets them give
    manager = world.user(helpline, role="manager")
    other = world.user(shelter)
    manager_client = browser(world)
    set_password(world, manager_client, manager)
    token = csrf(manager_client, "/org/users")
    page = manager_client.get("/org/users").text
    assert 'value="administrator"' not in page and "Shelter" not in page
    ok = manager_client.post(
        f"/org/users/{agent.id}/change",
        data={"csrf_token": token, "role": "manager", "partner": helpline},
    )
    assert ok.status_code == 302 and role_and_partner(world, agent) == ("manager", helpline)
    for role, partner in (("administrator", ""), ("agent", shelter)):
        refused = manager_client.post(
            f"/org/users/{agent.id}/change",
            data={"csrf_token": token, "role": role, "partner": partner},
        )
        assert refused.status_code == 302
        assert "That could not be done." in manager_client.get("/org/users").text
    assert role_and_partner(world, agent) == ("manager", helpline)
    elsewhere = manager_client.post(
        f"/org/users/{other.id}/change",
        data={"csrf_token": token, "role": "manager", "partner": helpline},
    )
    assert elsewhere.status_code == 404 and role_and_partner(world, other) == ("agent", shelter)

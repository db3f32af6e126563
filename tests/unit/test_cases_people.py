"""Orgs, partners, users, tokens and labels through the cases API (embedded default)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.cases import handlers
from services.cases.domain import Conflict
from services.cases.models import Token
from services.cli import main as cli_main
from shared import events as ev
from shared.auth import hash_secret
from tests.cases_helpers import ORG, CasesWorld, Person, at, flowbridge_event


# --- bootstrap and tokens -----------------------------------------------------------------------
def test_bootstrap_creates_the_org_its_admin_and_announces_the_org(world):
    me = world.ok(world.get(world.admin, "/api/v1/me"))
    assert me["user"]["role"] == "administrator" and me["org"]["key"] == ORG
    [event] = world.events(ev.ORG_UPDATED)
    assert event.org == ORG and event.data["org_version"] == 1


def test_bootstrap_refuses_an_org_that_has_an_administrator(world):
    with pytest.raises(Conflict):
        handlers.bootstrap_org(world.store, org=ORG, name="again", admin_email="x@y.example")


def test_bootstrap_adopts_an_org_that_events_created_first(world):
    world.message(org="late-org")  # messages came before anybody set the org up
    user_id, token = handlers.bootstrap_org(
        world.store, org="late-org", name="Late", admin_email="a@late.example"
    )
    admin = Person(user_id, token, "late-org")
    assert world.ok(world.get(admin, "/api/v1/org"))["name"] == "Late"
    assert len(world.ok(world.get(admin, "/api/v1/messages", folder="unlabelled"))["items"]) == 1


def test_cli_bootstrap_prints_the_token_once_and_it_works(settings, capsys, monkeypatch):
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    monkeypatch.delenv("UPARTNERS_DATABASE_URL", raising=False)
    code = cli_main(
        [
            "cases",
            "bootstrap",
            "--org",
            "helpline-sp",
            "--name",
            "Helpline SP",
            "--admin-email",
            "Boss@Helpline.example",
        ]
    )
    assert code == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    world = CasesWorld(settings)  # same data dir: it sees the bootstrapped org
    try:
        me = world.ok(world.get(Person("?", token, "helpline-sp"), "/api/v1/me"))
        assert me["user"]["email"] == "boss@helpline.example"
        with world.store.db.session() as session:  # only the hash is kept
            stored = set(session.scalars(select(Token.token_hash)))
        assert hash_secret(token) in stored and token not in stored
    finally:
        world.close()
    assert (
        cli_main(
            [
                "cases",
                "bootstrap",
                "--org",
                "helpline-sp",
                "--name",
                "x",
                "--admin-email",
                "b@x.example",
            ]
        )
        == 1
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Token abc"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "unknown", "wrong-scheme", "empty"],
)
def test_requests_without_a_valid_token_get_401(world, headers):
    response = world.client.get("/api/v1/messages", headers=headers)
    assert response.status_code == 401 and response.json["error"] == "UNAUTHORIZED"


def test_tokens_are_shown_once_listed_without_secret_and_revocable(world):
    partner = world.partner()
    agent = world.user(partner)
    created = world.ok(
        world.post(agent, f"/api/v1/users/{agent.id}/tokens", {"description": "laptop"}), 201
    )
    second = Person(agent.id, created["token"], ORG)
    assert world.get(second, "/api/v1/me").status_code == 200
    listed = world.ok(world.get(agent, f"/api/v1/users/{agent.id}/tokens"))["items"]
    assert len(listed) == 2 and all("token" not in t for t in listed)
    assert created["token"] not in str(listed)
    revoked = world.call(agent, "DELETE", f"/api/v1/users/{agent.id}/tokens/{created['id']}")
    assert world.ok(revoked)["revoked_at"] is not None
    assert world.get(second, "/api/v1/me").status_code == 401
    assert world.get(agent, "/api/v1/me").status_code == 200


def test_a_deactivated_user_is_locked_out(world):
    partner = world.partner()
    agent = world.user(partner)
    world.ok(world.call(world.admin, "PATCH", f"/api/v1/users/{agent.id}", {"active": False}))
    assert world.get(agent, "/api/v1/me").status_code == 401


# --- roles --------------------------------------------------------------------------------------
def test_partner_manager_manages_only_its_partner(world):
    mine, theirs = world.partner("Mine"), world.partner("Theirs")
    manager = world.user(mine, role="manager")
    colleague = world.user(mine)
    stranger = world.user(theirs)
    added = world.post(
        manager, "/api/v1/users", {"name": "New", "email": "new@mine.example", "role": "agent"}
    )
    assert world.ok(added, 201)["partner"]["id"] == mine
    assert (
        world.post(
            manager,
            "/api/v1/users",
            {"name": "Boss", "email": "b@mine.example", "role": "administrator"},
        ).status_code
        == 403
    )
    assert (
        world.post(
            manager,
            "/api/v1/users",
            {"name": "X", "email": "x@t.example", "role": "agent", "partner": theirs},
        ).status_code
        == 403
    )
    assert world.ok(world.post(manager, f"/api/v1/users/{colleague.id}/tokens", {}), 201)
    assert world.post(manager, f"/api/v1/users/{stranger.id}/tokens", {}).status_code == 404
    listed = {u["id"] for u in world.ok(world.get(manager, "/api/v1/users"))["items"]}
    assert colleague.id in listed and stranger.id not in listed


def test_agents_cannot_manage_people_labels_or_settings(world):
    agent = world.user(world.partner())
    assert (
        world.post(
            agent, "/api/v1/users", {"name": "X", "email": "x@x.example", "role": "agent"}
        ).status_code
        == 403
    )
    assert world.post(agent, "/api/v1/labels", {"name": "x"}).status_code == 403
    assert world.post(agent, "/api/v1/partners", {"name": "x"}).status_code == 403
    assert world.call(agent, "PATCH", "/api/v1/org", {"name": "x"}).status_code == 403
    assert (
        world.call(agent, "PATCH", f"/api/v1/users/{agent.id}", {"role": "manager"}).status_code
        == 403
    )
    renamed = world.call(agent, "PATCH", f"/api/v1/users/{agent.id}", {"name": "Ana"})
    assert world.ok(renamed)["name"] == "Ana"


def test_an_admin_cannot_lock_themselves_out(world):
    response = world.call(
        world.admin, "PATCH", f"/api/v1/users/{world.admin.id}", {"active": False}
    )
    assert response.status_code == 409


def test_a_users_partner_changes_with_the_role_rules(world):
    mine, theirs = world.partner("Mine"), world.partner("Theirs")
    manager, agent = world.user(mine, role="manager"), world.user(mine)

    def patch(person, user, body):
        return world.call(person, "PATCH", f"/api/v1/users/{user.id}", body)

    assert patch(manager, agent, {"partner": theirs}).status_code == 403  # not theirs to give
    assert patch(manager, manager, {"partner": theirs}).status_code == 403
    assert patch(world.admin, agent, {"partner": None}).status_code == 422  # agents have one
    assert patch(world.admin, agent, {"role": "administrator"}).status_code == 422
    moved = world.ok(patch(world.admin, agent, {"partner": theirs}))
    assert moved["partner"]["id"] == theirs and moved["role"] == "agent"
    promoted = world.ok(patch(world.admin, agent, {"role": "administrator", "partner": None}))
    assert promoted["partner"] is None and promoted["role"] == "administrator"
    me = world.call(world.admin, "PATCH", f"/api/v1/users/{world.admin.id}", {"partner": mine})
    assert me.status_code == 409


def test_emails_are_unique_per_org(world):
    body = {"name": "A", "email": "same@x.example", "role": "administrator"}
    world.ok(world.post(world.admin, "/api/v1/users", body), 201)
    assert world.post(world.admin, "/api/v1/users", body).json["error"] == "EMAIL_TAKEN"


def test_partner_users_see_their_partner_in_full_and_others_as_a_directory(world):
    label = world.label()
    mine = world.partner("Mine", restricted=True, labels=(label,))
    theirs = world.partner("Theirs", restricted=True, labels=(label,))
    agent = world.user(mine)
    listed = {p["id"]: p for p in world.ok(world.get(agent, "/api/v1/partners"))["items"]}
    assert listed[mine]["restricted"] is True and listed[mine]["labels"]
    assert set(listed[theirs]) == {"id", "name"}
    assert world.get(agent, f"/api/v1/partners/{theirs}").status_code == 404
    assert world.ok(world.get(agent, f"/api/v1/partners/{mine}"))["name"] == "Mine"


# --- org settings -------------------------------------------------------------------------------
def test_each_settings_change_emits_org_updated_with_a_higher_version(world):
    changes = {
        "timezone": "America/Sao_Paulo",
        "suspend_groups": ["g-bot"],
        "followup_flow": "f-activate",
        "followup_every_close": True,
        "interrupt_on_open": True,
        "mirror_archive": True,
        "display_field": "age",
        "warning_days": 3,
    }
    org = world.ok(world.call(world.admin, "PATCH", "/api/v1/org", changes))
    assert org["suspend_groups"] == [{"uuid": "g-bot", "name": None}] and org["warning_days"] == 3
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", changes))  # no change: no event
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"mirror_labels": True}))
    events = world.events(ev.ORG_UPDATED)
    assert [e.data["org_version"] for e in events] == [1, 2, 3]
    assert events[1].data["suspend_groups"] == ["g-bot"]
    assert events[1].data["followup_flow"] == "f-activate"
    assert "display_field" not in events[1].data  # cases-only settings stay here


@pytest.mark.parametrize(
    "body, field",
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"warning_days": 0}, "warning_days"),
        ({"mirror_archive": "perhaps"}, "mirror_archive"),
        ({"colour": "red"}, "colour"),
        ({"name": "   "}, "name"),
    ],
)
def test_bad_settings_get_400_naming_the_field(world, body, field):
    response = world.call(world.admin, "PATCH", "/api/v1/org", body)
    assert response.status_code == 400 and field in response.json["fields"]


def test_settings_pickers_use_the_synced_catalog_once_known(world):
    assert world.ok(world.get(world.admin, "/api/v1/org/catalog"))["groups"] == []
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
    world.deliver(
        flowbridge_event(  # an older snapshot arriving late changes nothing
            ev.CATALOG_SYNCED, groups=[], flows=[], synced_on=at(-60).isoformat()
        )
    )
    catalog = world.ok(world.get(world.admin, "/api/v1/org/catalog"))
    assert [g["name"] for g in catalog["groups"]] == ["Bot", "Teens"]
    picked = world.call(
        world.admin, "PATCH", "/api/v1/org", {"suspend_groups": ["g-bot"], "followup_flow": "f-1"}
    )
    assert world.ok(picked)["suspend_groups"] == [{"uuid": "g-bot", "name": "Bot"}]
    assert world.ok(picked)["followup_flow"] == {"uuid": "f-1", "name": "Activate chat"}
    for body, field in (
        ({"suspend_groups": ["g-smart"]}, "suspend_groups"),
        ({"suspend_groups": ["g-unknown"]}, "suspend_groups"),
        ({"followup_flow": "f-unknown"}, "followup_flow"),
    ):
        response = world.call(world.admin, "PATCH", "/api/v1/org", body)
        assert response.status_code == 422 and field in response.json["fields"]


# --- labels -------------------------------------------------------------------------------------
def test_label_crud_emits_events_with_increasing_versions(world):
    rule = [
        {"type": "keywords", "quantifier": "any", "keywords": ["violência", "abuso"]},
        {"type": "word_count", "minimum": 2},
    ]
    created = world.ok(
        world.post(
            world.admin,
            "/api/v1/labels",
            {"name": "Violence", "description": "urgent", "rule": rule, "synced": True},
        ),
        201,
    )
    assert created["rule"] == rule and created["label_version"] == 1
    assert created["rule_description"] == (
        'has any of the keywords "violência", "abuso" and has at least 2 words'
    )
    label = created["id"]
    updated = world.call(world.admin, "PATCH", f"/api/v1/labels/{label}", {"active": False})
    assert world.ok(updated)["label_version"] == 2
    assert world.call(world.admin, "DELETE", f"/api/v1/labels/{label}").status_code == 204
    assert world.get(world.admin, f"/api/v1/labels/{label}").status_code == 404
    events = [e for e in world.events() if e.name.startswith("label.")]
    assert [(e.name, e.data["label_version"]) for e in events] == [
        (ev.LABEL_CREATED, 1),
        (ev.LABEL_UPDATED, 2),
        (ev.LABEL_DELETED, 3),
    ]
    assert events[0].data["rule"] == rule and events[0].data["synced"] is True
    # the name is free again once the label is gone
    assert world.post(world.admin, "/api/v1/labels", {"name": "Violence"}).status_code == 201


def test_labels_take_the_hyphenated_keywords_casepro_took(world):
    rule = [{"type": "keywords", "quantifier": "any", "keywords": ["bem-estar", "covid-19"]}]
    created = world.ok(world.post(world.admin, "/api/v1/labels", {"name": "B", "rule": rule}), 201)
    assert created["rule"] == rule
    assert created["rule_description"] == 'has any of the keywords "bem-estar", "covid-19"'


@pytest.mark.parametrize(
    "rule, message",
    [
        ([{"type": "keywords", "quantifier": "some", "keywords": ["a"]}], "quantifier"),
        ([{"type": "colour"}], "unknown test type"),
        ([{"type": "word_count", "minimum": 0}], "at least 1"),
        ([{"type": "keywords", "quantifier": "any", "keywords": ["-estima"]}], "hyphens"),
        ({"type": "keywords"}, "Not a valid list"),
        ([{"type": "keywords", "quantifier": "any", "keywords": ["a\u0000"]}], "NUL"),
    ],
)
def test_invalid_rules_are_refused_with_the_rule_error_on_the_field(world, rule, message):
    response = world.post(world.admin, "/api/v1/labels", {"name": "x", "rule": rule})
    assert response.status_code == 400
    assert message in str(response.json["fields"]["rule"])
    assert world.events(ev.LABEL_CREATED) == []


def test_label_names_are_unique_ignoring_case(world):
    world.label("Health")
    response = world.post(world.admin, "/api/v1/labels", {"name": "health"})
    assert response.status_code == 409 and response.json["error"] == "LABEL_NAME_TAKEN"


def test_restricted_partners_see_only_their_labels(world):
    mine, other = world.label("Mine"), world.label("Other")
    agent = world.user(world.partner(restricted=True, labels=(mine,)))
    assert [label["id"] for label in world.ok(world.get(agent, "/api/v1/labels"))["items"]] == [
        mine
    ]
    assert world.get(agent, f"/api/v1/labels/{other}").status_code == 404


def test_deleting_a_label_takes_it_off_partners_and_messages(world):
    label = world.label()
    partner = world.partner(restricted=True, labels=(label,))
    agent = world.user(partner)
    message = world.message([label])
    assert world.ok(world.get(agent, f"/api/v1/messages/{message}"))
    world.call(world.admin, "DELETE", f"/api/v1/labels/{label}")
    assert world.ok(world.get(world.admin, f"/api/v1/partners/{partner}"))["labels"] == []
    assert world.get(agent, f"/api/v1/messages/{message}").status_code == 404
    assert world.ok(world.get(world.admin, f"/api/v1/messages/{message}"))["labels"] == []

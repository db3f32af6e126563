"""The web pages' sign-in: one-time links, passwords, sessions, CSRF, limits, and the first page
(the inbox), with the API staying bearer-only (embedded default, Flask's test client)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from services.cases.models import User
from shared.logs import URN_SCHEMES
from tests.cases_helpers import CONTACT_NAME, PHONE

PASSWORD = "a long enough secret"


@pytest.fixture
def helpline(world):
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    agent = world.user(partner, name="Ana")
    return {"label": label, "partner": partner, "agent": agent}


def browser(world):
    """A separate cookie jar: one person's browser."""
    return world.app.test_client()


def csrf(client, path="/sign-in") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def invite(world, person) -> str:
    answer = world.post(world.admin, f"/api/v1/users/{person.id}/sign-in-link", {})
    return world.ok(answer, 201)["path"]


def set_password(world, client, person, password=PASSWORD):
    path = invite(world, person)
    token = csrf(client, path)
    return client.post(path, data={"csrf_token": token, "password": password, "confirm": password})


def sign_in(client, email, password=PASSWORD, address="10.0.0.1"):
    token = csrf(client)
    return client.post(
        "/sign-in",
        data={"csrf_token": token, "email": email, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def email_of(world, person) -> str:
    return world.ok(world.get(world.admin, f"/api/v1/users/{person.id}"))["email"]


def test_an_invited_user_sets_a_password_once_and_is_signed_in(world, helpline):
    agent = helpline["agent"]
    client = browser(world)
    path = invite(world, agent)
    page = client.get(path)
    assert page.status_code == 200 and "Ana" in page.get_data(as_text=True)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    token = csrf(client, path)
    short = client.post(path, data={"csrf_token": token, "password": "short", "confirm": "short"})
    assert short.status_code == 400 and "At least 10 characters." in short.get_data(as_text=True)
    differ = client.post(path, data={"csrf_token": token, "password": PASSWORD, "confirm": "x"})
    assert differ.status_code == 400
    done = client.post(path, data={"csrf_token": token, "password": PASSWORD, "confirm": PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/inbox"
    assert client.get("/inbox").status_code == 200
    assert browser(world).get(path).status_code == 404  # a link works once


def test_sign_in_out_and_the_inbox_shows_only_what_the_partner_sees(world, helpline):
    agent = helpline["agent"]
    set_password(world, browser(world), agent)
    world.message([helpline["label"]], text="preciso de ajuda", fields={"phone": PHONE})
    world.message([world.label("other")], text="not for the helpline")
    client = browser(world)
    assert client.get("/inbox").headers["Location"].startswith("/sign-in")
    wrong = sign_in(client, email_of(world, agent), "not the password")
    assert wrong.status_code == 401 and "do not match" in wrong.get_data(as_text=True)
    right = sign_in(client, email_of(world, agent).upper())
    assert right.status_code == 302
    page = client.get("/inbox").get_data(as_text=True)
    assert "preciso de ajuda" in page and "not for the helpline" not in page
    assert "violence" in page and re.search(r"C-[0-9A-Z]{8}", page)
    assert PHONE not in page and CONTACT_NAME not in page
    assert not re.search(r"\b(?:" + "|".join(URN_SCHEMES) + r"):", page)
    out = client.post("/sign-out", data={"csrf_token": csrf(client, "/inbox")})
    assert out.status_code == 302
    assert client.get("/inbox").status_code == 302


def test_state_changing_requests_without_the_csrf_token_are_refused(world, helpline):
    set_password(world, browser(world), helpline["agent"])
    client = browser(world)
    email = email_of(world, helpline["agent"])
    refused = client.post("/sign-in", data={"email": email, "password": PASSWORD})
    assert refused.status_code == 403 and "expired" in refused.get_data(as_text=True)
    assert sign_in(client, email).status_code == 302
    assert client.post("/sign-out").status_code == 403
    assert client.get("/inbox").status_code == 200  # still signed in


def test_failed_sign_ins_are_limited_per_account_and_per_address(world, helpline):
    agent = helpline["agent"]
    set_password(world, browser(world), agent)
    email = email_of(world, agent)
    client = browser(world)
    for _ in range(5):
        assert sign_in(client, email, "wrong password!").status_code == 401
    limited = sign_in(client, email, address="10.9.9.9")  # even right, from elsewhere
    assert limited.status_code == 429 and "Try again in" in limited.get_data(as_text=True)
    for number in range(30):
        assert sign_in(client, f"nobody{number}@x.example", address="10.0.0.7").status_code == 401
    other = world.user(helpline["partner"], name="Bia")
    set_password(world, browser(world), other)
    assert sign_in(client, email_of(world, other), address="10.0.0.7").status_code == 429
    assert sign_in(client, email_of(world, other), address="10.0.0.8").status_code == 302


def test_deactivating_a_user_ends_their_sessions_at_once(world, helpline):
    agent = helpline["agent"]
    client = browser(world)
    set_password(world, client, agent)
    assert client.get("/inbox").status_code == 200
    world.ok(world.call(world.admin, "PATCH", f"/api/v1/users/{agent.id}", {"active": False}))
    assert client.get("/inbox").headers["Location"].startswith("/sign-in")


def test_the_api_never_accepts_the_session_cookie(world, helpline):
    client = browser(world)
    set_password(world, client, helpline["agent"])
    assert client.get("/inbox").status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_only_a_path_of_this_site_is_followed_after_sign_in(world, helpline):
    set_password(world, browser(world), helpline["agent"])
    client = browser(world)
    email = email_of(world, helpline["agent"])
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        token = csrf(client)
        answer = client.post(
            f"/sign-in?next={target}",
            data={"csrf_token": token, "email": email, "password": PASSWORD},
        )
        assert answer.headers["Location"] == "/inbox", target
        client.post("/sign-out", data={"csrf_token": csrf(client, "/inbox")})


def test_the_language_is_the_users_else_the_browsers(world, helpline):
    agent = helpline["agent"]
    client = browser(world)
    arabic = client.get("/sign-in", headers={"Accept-Language": "ar,en;q=0.5"})
    assert '<html lang="ar" dir="rtl">' in arabic.get_data(as_text=True)
    assert "تسجيل الدخول" in arabic.get_data(as_text=True)
    portuguese = client.get("/sign-in", headers={"Accept-Language": "pt-PT"})
    assert '<html lang="pt-BR" dir="ltr">' in portuguese.get_data(as_text=True)
    set_password(world, client, agent)
    with world.store.unit_of_work() as uow:
        uow.session.execute(update(User).where(User.id == agent.id).values(language="fr"))
        uow.commit()
    page = client.get("/inbox", headers={"Accept-Language": "ar"}).get_data(as_text=True)
    assert '<html lang="fr" dir="ltr">' in page and "Boîte de réception" in page


def test_only_administrators_and_the_partners_managers_make_links(world, helpline):
    agent, partner = helpline["agent"], helpline["partner"]
    manager = world.user(partner, role="manager")
    other_agent = world.user(world.partner("Other"))
    assert world.post(manager, f"/api/v1/users/{agent.id}/sign-in-link", {}).status_code == 201
    assert world.post(agent, f"/api/v1/users/{manager.id}/sign-in-link", {}).status_code == 403
    refused = world.post(manager, f"/api/v1/users/{other_agent.id}/sign-in-link", {})
    assert refused.status_code == 404  # another partner's user does not exist for them


def test_behind_a_trusted_proxy_limits_count_the_client_not_the_proxy(settings, helpline, world):
    """With UPARTNERS_PROXIES=1 the address is X-Forwarded-For's: one client's failures do not
    lock out the others behind the same proxy."""
    from services.cases.app import create_app

    set_password(world, browser(world), helpline["agent"])
    proxied = create_app(settings.with_(proxies=1), world.store).test_client()
    email = email_of(world, helpline["agent"])
    for number in range(30):
        token = csrf(proxied)
        answer = proxied.post(
            "/sign-in",
            data={"csrf_token": token, "email": f"x{number}@x.example", "password": "wrong"},
            headers={"X-Forwarded-For": "203.0.113.9"},
            environ_base={"REMOTE_ADDR": "10.0.0.2"},
        )
        assert answer.status_code == 401
    token = csrf(proxied)
    other_client = proxied.post(
        "/sign-in",
        data={"csrf_token": token, "email": email, "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.4"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert other_client.status_code == 302

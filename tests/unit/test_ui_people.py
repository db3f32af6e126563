"""The user's own pages: notifications with the top bar's unread count, and the profile (name,
language, password) (embedded default, Flask's test client)."""

from __future__ import annotations

from tests.unit.test_ui_sign_in import PASSWORD, browser, csrf, email_of, set_password, sign_in


def test_notifications_count_list_and_open_their_case(world):
    label = world.label("violence")
    partner = world.partner("Helpline", restricted=True, labels=(label,))
    agent, colleague = world.user(partner, name="Ana"), world.user(partner, name="Bia")
    client = browser(world)
    set_password(world, client, agent)
    case = world.open_case(colleague, world.message([label]), partner, user=agent.id)
    page = client.get("/inbox").get_data(as_text=True)
    assert 'aria-label="1 unread"' in page
    listing = client.get("/notifications").get_data(as_text=True)
    assert "A case was assigned to you" in listing and "Bia" in listing
    notification = world.ok(world.get(agent, "/api/v1/notifications"))["items"][0]
    token = csrf(client, "/notifications")
    opened = client.post(f"/notifications/{notification['id']}/read", data={"csrf_token": token})
    assert opened.headers["Location"] == f"/cases/{case['id']}"
    assert "unread" not in client.get("/inbox").get_data(as_text=True)
    refused = client.post("/notifications/n-unknown/read", data={"csrf_token": token})
    assert refused.status_code == 404


def test_the_profile_renames_sets_the_language_and_changes_the_password(world):
    agent = world.user(world.partner("Helpline"), name="Ana")
    client = browser(world)
    set_password(world, client, agent)
    other_device = browser(world)
    assert sign_in(other_device, email_of(world, agent)).status_code == 302
    token = csrf(client, "/profile")
    saved = client.post(
        "/profile",
        data={"csrf_token": token, "form": "details", "name": "Ana Souza", "language": "fr"},
    )
    assert saved.status_code == 302
    page = client.get("/profile").get_data(as_text=True)
    assert '<html lang="fr" dir="ltr">' in page and "Ana Souza" in page and "Enregistré." in page
    wrong = client.post(
        "/profile",
        data={
            "csrf_token": token,
            "form": "password",
            "current": "not it at all",
            "password": "another long secret",
            "confirm": "another long secret",
        },
    )
    assert wrong.status_code == 400
    changed = client.post(
        "/profile",
        data={
            "csrf_token": token,
            "form": "password",
            "current": PASSWORD,
            "password": "another long secret",
            "confirm": "another long secret",
        },
    )
    assert changed.status_code == 302 and client.get("/inbox").status_code == 200
    assert other_device.get("/inbox").status_code == 302  # its session ended
    assert sign_in(browser(world), email_of(world, agent), "another long secret").status_code == 302

"""The statistics pages in a real browser: the org's summary and agent activity for an
administrator on a laptop in English and on a phone in Arabic, a partner's page for its agent;
nothing wider than the screen, nothing identifying, screenshots of each."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import openpyxl
from playwright.sync_api import expect

from shared import events as ev
from shared.bus.dispatch import Outcome
from tests.browser.test_sign_in_and_inbox import choose_password, identifying, seed, sign_in


def history(world) -> None:
    """A few weeks of messages, replies and cases, so the charts have bars."""
    label = world.label("School")
    partner = world.ok(world.get(world.admin, "/api/v1/partners"))["items"][0]["id"]
    now = datetime.now(UTC)
    for day in range(0, 40, 3):
        for _ in range(day % 4 + 1):
            world.message([label], text="Estou com medo", received_at=now - timedelta(days=day))
    message = world.message([label], text="Preciso de ajuda", received_at=now)
    case = world.open_case(world.admin, message, partner)
    world.ok(world.post(world.admin, f"/api/v1/cases/{case['id']}/reply", {"text": "Oi"}), 201)
    world.ok(world.post(world.admin, f"/api/v1/cases/{case['id']}/close", {"note": "ok"}))
    for name in ("Beatriz Nascimento", "Youssef"):
        world.user(partner, name=name)


def test_the_statistics_pages(site, chromium, shots, monkeypatch):
    monkeypatch.setattr("services.cases.ui.stats_pages.ACTIVITY_PAGE", 2)  # to see the pager
    world, base = site
    agent_link, agent_email = seed(world)
    history(world)
    admin_link = world.ok(
        world.post(world.admin, f"/api/v1/users/{world.admin.id}/sign-in-link", {}), 201
    )["path"]
    for language, width, suffix in (("en", 1280, ""), ("ar", 360, "-ar-phone")):
        context = chromium.new_context(viewport={"width": width, "height": 800}, locale=language)
        page = context.new_page()
        if language == "en":
            choose_password(page, base + admin_link)
        else:
            sign_in(page, base, "admin@unicef-br.example")
        page.goto(base + "/stats")
        expect(page.locator("figure.chart svg")).to_have_count(4)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert identifying(page.content()) == []
        page.screenshot(path=shots / f"stats{suffix}.png", full_page=True)
        page.goto(base + "/stats/activity")
        expect(page.locator("table.activity tbody tr")).to_have_count(2)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert identifying(page.content()) == []
        page.screenshot(path=shots / f"stats-activity{suffix}.png", full_page=True)
        page.locator("nav.pager a[rel=next]").click()
        expect(page.locator("nav.pager a[rel=prev]")).to_be_visible()
        context.close()
    agent = chromium.new_context(viewport={"width": 390, "height": 844}, locale="en").new_page()
    choose_password(agent, base + agent_link)
    agent.goto(base + "/stats")
    expect(agent.get_by_role("heading", name="Counsellors")).to_be_visible()
    assert identifying(agent.content()) == []
    agent.screenshot(path=shots / "stats-partner-phone.png", full_page=True)


def test_a_manager_exports_the_partners_replies_as_xlsx(site, chromium, shots):
    world, base = site
    seed(world)
    history(world)
    partner = world.ok(world.get(world.admin, "/api/v1/partners"))["items"][0]["id"]
    manager = world.user(partner, role="manager", name="Marta")
    message = world.ok(world.get(manager, "/api/v1/messages"))["items"][0]["id"]
    world.ok(world.post(manager, f"/api/v1/messages/{message}/reply", {"text": "Estou aqui"}), 201)
    link = world.ok(world.post(world.admin, f"/api/v1/users/{manager.id}/sign-in-link", {}), 201)
    page = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en").new_page()
    choose_password(page, base + link["path"])
    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("heading", name="Counsellors")).to_be_visible()
    replies = page.locator("form.export:has(input[name=kind][value=replies])")
    replies.get_by_label("Export every reply as").select_option("xlsx")
    replies.locator("button[type=submit]").click()
    page.wait_for_url(base + "/exports")
    for event in world.events(ev.EXPORT_REQUESTED):  # the cases worker's part
        assert world.deliver(event) is Outcome.ACK
    page.reload()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").click()
    path = download.value.path()
    assert download.value.suggested_filename.endswith(".xlsx")
    with open(path, "rb") as file:  # the download has no extension: openpyxl reads bytes
        workbook = openpyxl.load_workbook(io.BytesIO(file.read()), read_only=True)
    rows = list(workbook.active.iter_rows(values_only=True))
    by = rows[0].index("by")
    assert [row[by] for row in rows[1:]] == ["Marta"]  # the partner's replies, the one there is
    assert identifying(page.content()) == []
    page.screenshot(path=shots / "exports.png", full_page=True)

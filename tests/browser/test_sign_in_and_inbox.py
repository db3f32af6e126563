"""The first pages in a real browser: an invited agent sets a password and lands in the inbox;
an agent signs in on a phone in Arabic (right to left). Screenshots of each, and the privacy scan
of the API tests over every rendered page."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from shared.logs import URN_SCHEMES
from tests.cases_helpers import CONTACT_NAME, PHONE

PASSWORD = "a long enough secret"
PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
URN = re.compile(r"\b(?:" + "|".join(URN_SCHEMES) + r"):")


def identifying(html: str) -> list[str]:
    # What a person reads, element by element: a number never runs on across two elements
    # (a contact reference ending in a digit, then a date, is not a phone number).
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " | ", html))
    text = re.sub(r"\d{4}-\d{2}-\d{2}T[\d:.+-]+", " ", text)  # machine-readable times
    text = re.sub(r"https?://\S+", " ", text)  # this site's own links (a loopback address)
    return PHONE_LIKE.findall(text) + URN.findall(text) + re.findall(CONTACT_NAME, text)


def choose_password(page, url: str) -> None:
    """Open a one-time link and choose the password: the user lands in the inbox."""
    page.goto(url)
    page.locator("#password").fill(PASSWORD)
    page.locator("#confirm").fill(PASSWORD)
    page.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/inbox"))


def sign_in(page, base: str, email: str) -> None:
    page.goto(base + "/sign-in")
    page.locator("#email").fill(email)
    page.locator("#password").fill(PASSWORD)
    page.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/inbox"))


def seed(world):
    label = world.label("Needs help")
    partner = world.partner("Counsellors", restricted=True, labels=(label,))
    agent = world.user(partner, name="Amani")
    world.message([label], text="Please help me, I am scared.", fields={"phone": PHONE})
    world.message([label], text="Sigo esperando una respuesta")
    world.message([world.label("Other")], text="another partner's message")
    link = world.ok(world.post(world.admin, f"/api/v1/users/{agent.id}/sign-in-link", {}), 201)
    email = world.ok(world.get(world.admin, f"/api/v1/users/{agent.id}"))["email"]
    return link["path"], email


def test_an_invited_agent_sets_a_password_and_reads_the_inbox(site, chromium, shots):
    world, base = site
    link, _ = seed(world)
    page = chromium.new_page(viewport={"width": 1280, "height": 800}, locale="en")
    page.goto(base + link)
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("The same again").fill(PASSWORD)
    page.screenshot(path=shots / "set-password.png", full_page=True)
    page.get_by_role("button", name="Save and sign in").click()
    page.wait_for_url(base + "/inbox")
    expect(page.get_by_role("heading", name=re.compile("Inbox"))).to_be_visible()
    expect(page.get_by_text("Please help me, I am scared.")).to_be_visible()
    expect(page.get_by_text("another partner's message")).to_have_count(0)
    assert identifying(page.content()) == []
    page.screenshot(path=shots / "inbox.png", full_page=True)
    first = page.locator("li.message").filter(has_text="Please help me, I am scared.")
    first.get_by_role("button", name="Flag").click()
    expect(page.locator("li.message.flagged")).to_have_count(1)
    first = page.locator("li.message").filter(has_text="Please help me, I am scared.")
    first.get_by_text("Reply", exact=True).click()
    first.get_by_label("Your reply").fill("We are here. You are safe to talk.")
    first.screenshot(path=shots / "reply.png")
    first.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_be_visible()  # "Reply queued..."
    expect(page.get_by_text("Please help me, I am scared.")).to_have_count(0)  # archived
    page.get_by_role("link", name=re.compile("Sent")).click()
    expect(page.get_by_text("We are here. You are safe to talk.")).to_be_visible()
    assert identifying(page.content()) == []
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/sign-in"))
    page.close()


def test_signing_in_on_a_phone_in_arabic(site, chromium, shots):
    world, base = site
    link, email = seed(world)
    setup = chromium.new_page()
    choose_password(setup, base + link)
    setup.close()

    context = chromium.new_context(
        viewport={"width": 360, "height": 740}, locale="ar", device_scale_factor=2
    )
    page = context.new_page()
    page.goto(base + "/inbox")
    page.wait_for_url(re.compile(r"/sign-in"))
    assert page.locator("html").get_attribute("dir") == "rtl"
    page.get_by_label("البريد الإلكتروني").fill(email)
    page.get_by_label("كلمة المرور").fill("not the password")
    page.get_by_role("button", name="تسجيل الدخول").click()
    expect(page.get_by_role("alert")).to_be_visible()
    page.screenshot(path=shots / "sign-in-ar-phone.png", full_page=True)
    page.get_by_label("كلمة المرور").fill(PASSWORD)
    page.get_by_role("button", name="تسجيل الدخول").click()
    page.wait_for_url(base + "/inbox")
    expect(page.get_by_role("heading", name=re.compile("صندوق الوارد"))).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, "nothing wider than the phone"
    assert identifying(page.content()) == []
    page.screenshot(path=shots / "inbox-ar-phone.png", full_page=True)
    context.close()


def test_the_scan_finds_what_it_looks_for():
    assert identifying(f"<p>call {PHONE}</p>") and identifying("<li>whatsapp:5511</li>")
    assert identifying(f"<span>{CONTACT_NAME}</span>")
    assert identifying("<span>C-T723Q354</span><time>11/21/26, 10:03</time>") == []


def test_an_agent_opens_a_case_works_it_and_closes_it(site, chromium, shots):
    world, base = site
    link, email = seed(world)
    for language, viewport, suffix in (("en", (1280, 900), ""), ("ar", (360, 740), "-ar-phone")):
        context = chromium.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, locale=language
        )
        page = context.new_page()
        if language == "en":
            choose_password(page, base + link)
        else:
            sign_in(page, base, email)
        page.locator("li.message").first.locator("a.open-case").click()
        page.wait_for_url(re.compile(r"/open-case"))
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]
        page.screenshot(path=shots / f"open-case{suffix}.png", full_page=True)
        page.locator("input[name=summary]").fill("Bullied at school")
        page.locator("textarea[name=reply]").fill("We are here.")
        page.locator("form[action*=open-case] button[type=submit]").click()
        page.wait_for_url(re.compile(r"/cases/"))
        page.locator("details:has(#note) summary").click()
        page.locator("#note").fill("Talked to the school counsellor.")
        page.locator("form[action$='/note'] button[type=submit]").click()
        expect(page.get_by_text("Talked to the school counsellor.")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport[0]
        assert identifying(page.content()) == []
        page.screenshot(path=shots / f"case{suffix}.png", full_page=True)
        page.locator("details:has(#final) summary").click()
        page.locator("#final").fill("Referred to a counsellor.")
        page.locator("form[action$='/close'] button[type=submit]").click()
        expect(page.locator(".state-closed")).to_be_visible()
        context.close()


def test_notifications_and_profile_on_a_phone_in_arabic(site, chromium, shots):
    world, base = site
    link, _ = seed(world)
    context = chromium.new_context(viewport={"width": 360, "height": 740}, locale="ar")
    page = context.new_page()
    choose_password(page, base + link)
    for path, name in (("/notifications", "notifications"), ("/profile", "profile")):
        page.goto(base + path)
        assert page.locator("html").get_attribute("dir") == "rtl"
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert identifying(page.content()) == []
        page.screenshot(path=shots / f"{name}-ar-phone.png", full_page=True)
    page.locator("#language").select_option("fr")
    page.locator("form:has(#language) button[type=submit]").click()
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.get_by_role("status").inner_text() == "Enregistré."
    context.close()


def test_an_administrator_invites_a_user(site, chromium, shots):
    world, base = site
    seed(world)
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
        page.goto(base + "/org/users")
        page.locator("#name").fill("Nova" + suffix)
        page.locator("#email").fill(f"nova{suffix}@helpline.example")
        page.locator("form:has(#role) button[type=submit]").click()
        link = page.locator(".copy code").inner_text()
        assert "/set-password/" in link
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert identifying(page.content()) == []
        page.screenshot(path=shots / f"org-users{suffix}.png", full_page=True)
        for tab in ("labels", "properties"):
            page.goto(f"{base}/org/{tab}")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=shots / f"org-{tab}{suffix}.png", full_page=True)
        for tab, name in (("labels", "label"), ("partners", "partner")):
            page.goto(f"{base}/org/{tab}")
            page.locator(".messages .meta a").first.click()  # a label's, a partner's page
            assert page.locator("#name").input_value()
            if name == "label":
                page.locator("#keywords").fill("help, respuesta")
                page.locator("button[value=preview]").click()  # the rule's recent matches
                expect(page.locator(".rule-preview .message")).to_have_count(2)
                assert identifying(page.content()) == []
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.screenshot(path=shots / f"org-{name}{suffix}.png", full_page=True)
        context.close()


def test_new_messages_show_without_a_reload(site, chromium, shots):
    """Within 15 s: the contact's next message in an open case's timeline, and a banner over the
    inbox; what the agent was typing stays."""
    world, base = site
    link, _ = seed(world)
    contact = "5d2a0000-0000-4000-8000-00000000beef"
    label = world.ok(world.get(world.admin, "/api/v1/labels"))["items"][0]["id"]
    first = world.message([label], text="Are you there?", contact=contact)
    page = chromium.new_page(viewport={"width": 1024, "height": 800}, locale="en")
    choose_password(page, base + link)
    partner = world.ok(world.get(world.admin, "/api/v1/partners"))["items"][0]["id"]
    case = world.open_case(world.admin, first, partner)

    page.goto(f"{base}/cases/{case['id']}")
    page.locator("#reply").fill("I am typing a long answer")
    world.message([], text="Please answer me", contact=contact)
    page.get_by_text("Please answer me").wait_for(timeout=15000)
    assert page.locator("#reply").input_value() == "I am typing a long answer"
    assert page.url == f"{base}/cases/{case['id']}"  # no reload

    page.goto(base + "/inbox")
    world.message([label], text="Someone new writes")
    banner = page.get_by_role("status").filter(has_text="1 new message")
    banner.wait_for(timeout=15000)
    page.screenshot(path=shots / "inbox-new-messages.png")
    banner.get_by_role("link").click()
    expect(page.get_by_text("Someone new writes")).to_be_visible()
    page.close()

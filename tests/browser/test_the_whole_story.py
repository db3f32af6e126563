"""The seed's whole story in a real browser, against `upartners run` (every service in one
process, with the contract fake of the RapidPro API as the flow engine): the administrator sets
up a label bound to a group and one bound to a flow step, the suspend group and the follow-up
flow, a restricted partner and its agent; a webhook arrives; the agent sees it labelled,
replies, opens a case with a first message; the contact's next message appears in the case
without a reload; the agent closes the case with a note; the fake engine shows the contact out
of and back in "Bot" and the follow-up flow started."""

from __future__ import annotations

import json
import re

import requests
from playwright.sync_api import expect

from fakes.rapidpro.seed import DEMO_CONTACT_AMINA, DEMO_TOKEN
from tests.browser.test_sign_in_and_inbox import choose_password, identifying
from tests.e2e.test_embedded_demo import WEBHOOK, Demo, eventually, exported

STEP = "de5e0004-0000-4000-8000-000000000002"  # the poll's wait step in docs/demo/webhook.json


def webhook(demo: Demo, secret: str, text: str, input_uuid: str) -> None:
    body = json.loads(WEBHOOK.read_text())
    body["input"]["uuid"] = input_uuid
    body["input"]["text"] = body["results"]["answer"]["input"] = text
    answer = requests.post(
        f"{demo.site}/webhooks/demo/flow",
        headers={"Authorization": f"Token {secret}", "Content-Type": "application/json"},
        data=json.dumps(body),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def groups_of_amina(demo: Demo) -> set[str]:
    answer = requests.get(
        f"{demo.engine}/api/v2/contacts.json",
        params={"uuid": DEMO_CONTACT_AMINA},
        headers={"Authorization": f"Token {DEMO_TOKEN}"},
        timeout=10,
    )
    return {group["name"] for group in answer.json()["results"][0]["groups"]}


def test_the_whole_story(tmp_path, chromium, shots):
    demo = Demo(tmp_path)
    with demo.running() as output:
        values = exported(output)
        admin = chromium.new_page(viewport={"width": 1280, "height": 900}, locale="en")
        choose_password(admin, demo.site + values["ADMIN_SIGN_IN"])

        admin.goto(demo.site + "/org/labels")
        admin.locator("#name").fill("U-Reporters")
        admin.locator("#description").fill("Everything U-Reporters write")
        admin.locator("#group").select_option(label="U-Reporters")
        admin.locator("form:has(#group) button[value=save]").click()
        admin.locator("#name").fill("Poll step")
        admin.locator("#flow").select_option(label="U-Report Poll")
        admin.locator("#node").fill(STEP)
        admin.locator("form:has(#group) button[value=save]").click()
        expect(admin.get_by_text("Everything U-Reporters write")).to_be_visible()

        admin.goto(demo.site + "/org/properties")
        admin.get_by_label("Bot", exact=True).check()
        admin.locator("#followup_flow").select_option(label="Activate chat")
        admin.locator("form:has(#followup_flow) button[type=submit]").click()
        expect(admin.get_by_role("status")).to_be_visible()

        admin.goto(demo.site + "/org/partners")
        admin.locator("#name").fill("Helpline")
        admin.locator("input[name=restricted]").check()
        admin.get_by_label("U-Reporters", exact=True).check()
        admin.locator("form:has(#name) button[type=submit]").click()
        admin.goto(demo.site + "/org/users")
        admin.locator("#name").fill("Hana")
        admin.locator("#email").fill("hana@helpline.example")
        admin.locator("#partner").select_option(label="Helpline")
        admin.locator("form:has(#role) button[type=submit]").click()
        invitation = admin.locator(".copy code").inner_text()

        webhook(demo, values["SECRET"], "Please help me, they hurt me at school.", "1" * 32)
        agent = chromium.new_page(viewport={"width": 390, "height": 844}, locale="en")
        choose_password(agent, invitation)

        def labelled() -> bool:
            agent.reload()
            return agent.get_by_text("Please help me, they hurt me at school.").count() == 1

        eventually(labelled, "the labelled message in the helpline's inbox", timeout=20)
        message = agent.locator("li.message").first
        expect(message).to_contain_text("U-Reporters")
        expect(message).not_to_contain_text("Needs help")
        assert identifying(agent.content()) == []

        message.get_by_text("Reply", exact=True).click()
        message.get_by_label("Your reply").fill("We read you. Are you safe now?")
        message.get_by_role("button", name="Send").click()
        expect(agent.get_by_text("they hurt me at school")).to_have_count(0)  # archived

        def delivered() -> bool:
            agent.goto(demo.site + "/inbox/sent")
            return agent.locator(".delivery-sent").count() == 1

        eventually(delivered, "the reply delivered by the flow engine", timeout=20)

        agent.goto(demo.site + "/inbox/archived")
        archived = agent.locator("li.message").first
        archived.get_by_text("Open a case").click()
        agent.wait_for_url(re.compile(r"/open-case"))
        agent.locator("input[name=summary]").fill("Bullied at school")
        agent.locator("textarea[name=reply]").fill("A counsellor will talk with you here.")
        agent.locator("form[action*=open-case] button[type=submit]").click()
        agent.wait_for_url(re.compile(r"/cases/"))
        eventually(lambda: "Bot" not in groups_of_amina(demo), "Amina out of Bot", timeout=20)

        webhook(demo, values["SECRET"], "Thank you. I am at home now.", "2" * 32)
        agent.get_by_text("Thank you. I am at home now.").wait_for(timeout=20000)
        assert identifying(agent.content()) == []
        agent.screenshot(path=shots / "story-case-phone.png", full_page=True)

        agent.get_by_text("Close the case").click()
        agent.locator("#final").fill("Referred to the school counsellor.")
        agent.locator("form[action$='/close'] button[type=submit]").click()
        expect(agent.locator(".state-closed")).to_be_visible()
        eventually(lambda: "Bot" in groups_of_amina(demo), "Amina back in Bot", timeout=20)

        def followup_started() -> bool:
            answer = requests.get(
                f"{demo.engine}/api/v2/flow_starts.json",
                headers={"Authorization": f"Token {DEMO_TOKEN}"},
                timeout=10,
            )
            return any(s["flow"]["name"] == "Activate chat" for s in answer.json()["results"])

        eventually(followup_started, "the follow-up flow started", timeout=20)
        admin.close()
        agent.close()

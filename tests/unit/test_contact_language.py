"""The contact's language, from the flow engine's messages: kept on the contact (its newest
message's), shown as the answers write it, and chosen first in the answers' picker."""

from __future__ import annotations

from datetime import UTC, datetime

from services.cases.answers_domain import engine_language
from tests.cases_helpers import message_labeled, message_received
from tests.unit.test_ui_sign_in import browser, set_password


def test_the_engines_codes_as_the_answers_write_them():
    assert engine_language("por") == "pt" and engine_language("POR") == "pt"
    assert engine_language("swa") == "sw" and engine_language("ara") == "ar"
    assert engine_language("kri") == "kri"  # no two-letter code: kept
    assert engine_language(None) is None and engine_language("not a code!") is None


def receive(world, label, contact, language, minute):
    received = message_received(
        contact=contact, received_at=datetime(2026, 11, 21, 10, minute, tzinfo=UTC)
    )
    received.data["language"] = language
    world.deliver(received)
    world.deliver(message_labeled(received, [label]))
    return received.data["message_id"]


def test_the_newest_message_says_the_contacts_language(world):
    label = world.label("help")
    first = receive(world, label, "4b7c50c5-3d4c-4c52-9a69-0c1b2d1e0f11", "por", 5)
    language = world.ok(world.get(world.admin, f"/api/v1/messages/{first}"))["contact"]["language"]
    assert language == "pt"
    receive(world, label, "4b7c50c5-3d4c-4c52-9a69-0c1b2d1e0f11", "spa", 9)
    receive(world, label, "4b7c50c5-3d4c-4c52-9a69-0c1b2d1e0f11", "eng", 1)  # older: no change
    language = world.ok(world.get(world.admin, f"/api/v1/messages/{first}"))["contact"]["language"]
    assert language == "es"


def test_the_picker_chooses_the_contacts_language_first(world):
    label = world.label("help")
    receive(world, label, "7d1f0a2e-11aa-4f3b-8c9d-2e4f6a8b0c13", "swa", 3)
    client = browser(world)
    set_password(world, client, world.admin)
    page = client.get("/inbox").get_data(as_text=True)
    assert '<option value="sw" selected>Swahili</option>' in page
    assert '<option value="en">English</option>' in page  # the page's own: offered, not chosen

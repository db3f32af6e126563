"""Ready-made answers in the pages: the Answers tab (list, new, change, translations, delete once
confirmed, CSV upload with row problems), the must-use box, the reply boxes' search as a
fragment and, without JavaScript, the page that fills a reply in; refusals shown inline."""

from __future__ import annotations

import io
import re

from shared import events as ev
from tests.cases_helpers import CONTACT_NAME, PHONE
from tests.unit.test_ui_admin import admin_browser
from tests.unit.test_ui_sign_in import browser, csrf, set_password


def add(world, question="Help?", answer="Call 188.", **values):
    body = {"question": question, "answer": answer, **values}
    return world.ok(world.post(world.admin, "/api/v1/answers", body), 201)


def agent_browser(world, partner):
    agent = world.user(partner)
    client = browser(world)
    set_password(world, client, agent)
    return client


def test_the_answers_tab_adds_changes_and_deletes_answers(world):
    label = world.label("legal")
    client = admin_browser(world)
    tab = client.get("/org/answers").text
    assert 'href="/org/answers" aria-current="page"' in tab and "No ready-made answers yet." in tab
    token = csrf(client, "/org/answers")
    added = client.post(
        "/org/answers",
        data={
            "csrf_token": token,
            "question": "Lawyer?",
            "answer": "Ask the court.",
            "language": "en",
            "labels": [label],
            "t_language": ["pt"],
            "t_question": ["Advogado?"],
            "t_answer": ["Pergunte ao tribunal."],
        },
    )
    assert added.status_code == 302
    [answer] = world.ok(world.get(world.admin, "/api/v1/answers"))["items"]
    assert answer["translations"][0]["question"] == "Advogado?"
    assert answer["labels"] == [{"id": label, "name": "legal"}]
    page = client.get(f"/org/answers/{answer['id']}").text
    assert 'value="Advogado?"' in page and "Delete the answer" in page
    changed = client.post(
        f"/org/answers/{answer['id']}",
        data={"csrf_token": token, "question": "Lawyer?", "answer": "Call 100.", "language": ""},
    )
    assert changed.status_code == 302
    after = world.ok(world.get(world.admin, f"/api/v1/answers/{answer['id']}"))
    assert after["answer"] == "Call 100." and after["translations"] == [] and after["labels"] == []
    unconfirmed = client.post(f"/org/answers/{answer['id']}/delete", data={"csrf_token": token})
    assert unconfirmed.status_code == 302
    assert world.get(world.admin, f"/api/v1/answers/{answer['id']}").status_code == 200
    client.post(f"/org/answers/{answer['id']}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert world.get(world.admin, f"/api/v1/answers/{answer['id']}").status_code == 404


def test_bad_answers_are_refused_inline_and_csrf_is_required(world):
    client = admin_browser(world)
    token = csrf(client, "/org/answers")
    bad = client.post(
        "/org/answers", data={"csrf_token": token, "question": "", "answer": "x", "language": "?"}
    )
    assert bad.status_code == 400 and 'role="alert"' in bad.text and "question" in bad.text
    forged = client.post("/org/answers", data={"question": "q", "answer": "a"})
    assert forged.status_code == 403
    assert world.ok(world.get(world.admin, "/api/v1/answers"))["items"] == []


def test_a_csv_upload_imports_or_shows_each_rows_problem(world):
    client = admin_browser(world)
    token = csrf(client, "/org/answers")

    def upload(text: bytes):
        return client.post(
            "/org/answers/import",
            data={"csrf_token": token, "file": (io.BytesIO(text), "answers.csv")},
            content_type="multipart/form-data",
        )

    bad = upload(b"question,answer,labels\nOk?,fine,\n,missing,\nNo?,x,unknown\n")
    assert bad.status_code == 400
    assert "Nothing was imported" in bad.text
    assert re.search(r"<strong>Line 3</strong>: The question is empty", bad.text)
    assert re.search(r"<strong>Line 4</strong>: No label is called", bad.text)
    assert world.ok(world.get(world.admin, "/api/v1/answers"))["items"] == []
    assert upload(b"\xff\xfe not utf-8").status_code == 400
    good = upload("question,answer\nHorário?,Das 8h às 18h.\n".encode())
    assert good.status_code == 302
    assert "Horário?" in client.get("/org/answers").text


def test_partners_do_not_see_the_answers_tab(world):
    partner = world.partner()
    client = agent_browser(world, partner)
    assert client.get("/org/answers").status_code == 404
    manager = world.user(partner, role="manager")
    managing = browser(world)
    set_password(world, managing, manager)
    assert managing.get("/org/answers").status_code == 404
    assert "/org/answers" not in managing.get("/org/users").text


def test_the_must_use_box_on_properties(world):
    client = admin_browser(world)
    token = csrf(client, "/org/properties")
    saved = client.post(
        "/org/properties",
        data={"csrf_token": token, "timezone": "UTC", "must_use_answers": "on"},
    )
    assert saved.status_code == 302
    assert world.ok(world.get(world.admin, "/api/v1/org"))["must_use_answers"] is True
    assert 'name="must_use_answers" checked' in client.get("/org/properties").text


def test_the_reply_boxes_search_answers_without_rendering_them_all(world):
    label = world.label("help")
    partner = world.partner()
    for number in range(30):
        add(world, f"Question {number}?", f"Answer number {number}.")
    add(world, "Horário?", "Das 8h às 18h.", language="pt", labels=[label])
    add(world, "Hours?", "From 8 to 6.", language="en")
    world.message([label], fields={"name": CONTACT_NAME, "phone": PHONE})
    client = agent_browser(world, partner)
    inbox = client.get("/inbox").text
    assert "Ready-made answers" in inbox and "Answer number 1" not in inbox  # not pre-rendered
    assert 'name="answer" value=""' in inbox
    fragment = client.get("/answers/pick?q=hor&language=pt&fragment=1&message=m1").text
    assert "Das 8h" in fragment and "From 8 to 6" not in fragment
    assert 'data-answer="' in fragment and "<html" not in fragment
    by_label = client.get("/answers/pick?q=help&fragment=1").text
    assert "Horário?" in by_label and "Hours?" not in by_label
    for text in (inbox, fragment):
        assert PHONE not in text and CONTACT_NAME not in text
    assert client.get("/answers/pick?language=klingon-language-x&fragment=1").status_code == 400


def test_without_javascript_a_chosen_answer_fills_the_reply_in(world):
    label = world.label("help")
    partner = world.partner()
    made = add(
        world,
        "Hours?",
        "From 8 to 6.",
        language="en",
        translations=[{"language": "pt", "question": "Horário?", "answer": "Das 8h às 18h."}],
    )
    message = world.message([label], fields={"name": CONTACT_NAME, "phone": PHONE})
    client = agent_browser(world, partner)
    listing = client.get(f"/answers/pick?q=hours&language=pt&message={message}").text
    assert "<html" in listing and "data-answer" not in listing  # no Insert without a box
    use = (
        re.search(r'href="(/messages/[^"]+/reply\?[^"]+)"', listing).group(1).replace("&amp;", "&")
    )
    reply = client.get(use).text
    assert ">Das 8h às 18h.</textarea>" in reply
    assert f'name="answer" value="{made["id"]}"' in reply
    assert PHONE not in reply and CONTACT_NAME not in reply
    token = csrf(client, use)
    sent = client.post(
        f"/messages/{message}/reply",
        data={"csrf_token": token, "text": "Das 8h às 17h.", "answer": made["id"]},
    )
    assert sent.status_code == 302
    assert world.events(ev.OUTGOING_REQUESTED)[-1].data["text"] == "Das 8h às 17h."


def test_must_use_refusals_keep_the_reply_and_say_why(world):
    label = world.label("help")
    partner = world.partner()
    made = add(world)
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"must_use_answers": True}))
    first, second = world.message([label]), world.message([label])
    client = agent_browser(world, partner)
    token = csrf(client, "/inbox")
    refused = client.post(f"/messages/{first}/reply", data={"csrf_token": token, "text": "Olá!"})
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    assert "Start from a ready-made answer" in refused.text and ">Olá!</textarea>" in refused.text
    assert world.events(ev.OUTGOING_REQUESTED) == []
    case = world.open_case(world.admin, second, partner)
    path = f"/cases/{case['id']}"
    in_case = client.post(f"{path}/reply", data={"csrf_token": token, "text": "Oi"})
    assert in_case.status_code == 400 and "Start from a ready-made answer" in in_case.text
    assert ">Oi</textarea>" in in_case.text
    prefilled = client.get(f"{path}?answer={made['id']}").text
    assert ">Call 188.</textarea>" in prefilled and f'value="{made["id"]}"' in prefilled
    sent = client.post(
        f"{path}/reply", data={"csrf_token": token, "text": "Call 188!", "answer": made["id"]}
    )
    assert sent.status_code == 302 and len(world.events(ev.OUTGOING_REQUESTED)) == 1

"""Ready-made answers through the API: keeping them (administrators only), who reads which,
searching by text, label and language, the CSV import (all or nothing, problems by line) and the
org's must-use rule on both kinds of reply."""

from __future__ import annotations

import pytest

from shared import events as ev

ANSWERS = "/api/v1/answers"


def add(world, question="Where can I get help?", answer="Call 188.", **values):
    body = {"question": question, "answer": answer, **values}
    return world.ok(world.post(world.admin, ANSWERS, body), 201)


def questions(world, person, **query):
    return [a["question"] for a in world.ok(world.get(person, ANSWERS, **query))["items"]]


def test_administrators_keep_answers_with_labels_and_translations(world):
    label = world.label("violence")
    made = add(
        world,
        labels=[label],
        language="en",
        translations=[{"language": "pt", "question": "Onde?", "answer": "Ligue 188."}],
    )
    assert made["labels"] == [{"id": label, "name": "violence"}]
    assert made["translations"] == [{"language": "pt", "question": "Onde?", "answer": "Ligue 188."}]
    path = f"{ANSWERS}/{made['id']}"
    assert (
        world.ok(world.get(world.admin, path, language="pt-BR"))["text"]["answer"] == "Ligue 188."
    )
    changed = world.ok(
        world.call(world.admin, "PATCH", path, {"answer": "Call 100.", "labels": []})
    )
    assert changed["answer"] == "Call 100." and changed["labels"] == []
    assert changed["translations"][0]["language"] == "pt"  # kept: not given
    assert world.call(world.admin, "DELETE", path).status_code == 204
    assert world.get(world.admin, path).status_code == 404


def test_partners_read_but_do_not_change_answers(world):
    made = add(world)
    agent = world.user(world.partner())
    manager = world.user(world.partner(), role="manager")
    path = f"{ANSWERS}/{made['id']}"
    assert world.ok(world.get(agent, path))["id"] == made["id"]
    for person in (agent, manager):
        assert world.post(person, ANSWERS, {"question": "q", "answer": "a"}).status_code == 403
        assert world.call(person, "PATCH", path, {"question": "x"}).status_code == 403
        assert world.call(person, "DELETE", path).status_code == 403
        imported = world.post(person, f"{ANSWERS}/import", {"csv": "question,answer\nq,a\n"})
        assert imported.status_code == 403
    assert questions(world, world.admin) == ["Where can I get help?"]


def test_a_restricted_partner_sees_unlabelled_answers_and_its_labels_only(world):
    mine, theirs = world.label("mine"), world.label("theirs")
    add(world, "Open to all?")
    add(world, "Mine?", labels=[mine])
    add(world, "Both?", labels=[mine, theirs])
    hidden = add(world, "Theirs?", labels=[theirs])
    agent = world.user(world.partner(restricted=True, labels=(mine,)))
    assert questions(world, agent) == ["Both?", "Mine?", "Open to all?"]
    both = world.ok(world.get(agent, ANSWERS, q="both"))["items"][0]
    assert both["labels"] == [{"id": mine, "name": "mine"}]  # not the other partner's label
    assert world.get(agent, f"{ANSWERS}/{hidden['id']}").status_code == 404
    assert questions(world, agent, q="theirs") == []  # a hidden label's name finds nothing
    other_org = world.other_org()
    assert questions(world, other_org) == []
    assert world.get(other_org, f"{ANSWERS}/{hidden['id']}").status_code == 404


def test_search_by_text_label_and_language(world):
    label = world.label("legal")
    add(world, "Is it 100% free?", "Yes.", language="en")
    add(
        world,
        "Lawyer?",
        "Ask the court.",
        labels=[label],
        language="en",
        translations=[{"language": "es", "question": "¿Abogado?", "answer": "Pregunte."}],
    )
    add(world, "Horário?", "Das 8h às 18h.", language="pt")
    add(world, "Any language", "OK")
    assert questions(world, world.admin, q="100%") == ["Is it 100% free?"]
    assert questions(world, world.admin, q="ABOGADO") == ["Lawyer?"]  # a translation's text
    assert questions(world, world.admin, q="leg") == ["Lawyer?"]  # a label's name
    assert questions(world, world.admin, label=label) == ["Lawyer?"]
    assert questions(world, world.admin, language="pt") == ["Any language", "Horário?"]
    spanish = world.ok(world.get(world.admin, ANSWERS, language="es"))["items"]
    assert [a["text"]["question"] for a in spanish] == ["Any language", "¿Abogado?"]
    assert questions(world, world.admin, limit=1) == ["Any language"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"question": "", "answer": "a"}, "question"),
        ({"question": "q", "answer": "a" * 4097}, "answer"),
        ({"question": "q", "answer": "a", "language": "portuguese"}, "language"),
        ({"question": "q", "answer": "a", "translations": [{"language": "pt"}]}, "translations"),
        ({"question": "q", "answer": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_answers_are_400_naming_the_field(world, body, field):
    response = world.post(world.admin, ANSWERS, body)
    assert response.status_code == 400 and field in response.json["fields"]


def test_unknown_labels_and_repeated_languages_are_422(world):
    unknown = world.post(world.admin, ANSWERS, {"question": "q", "answer": "a", "labels": ["x"]})
    assert unknown.status_code == 422 and "labels" in unknown.json["fields"]
    twice = world.post(
        world.admin,
        ANSWERS,
        {
            "question": "q",
            "answer": "a",
            "language": "pt",
            "translations": [{"language": "pt", "question": "q", "answer": "a"}],
        },
    )
    assert twice.status_code == 422 and "translations" in twice.json["fields"]
    assert questions(world, world.admin) == []


def test_a_deleted_label_leaves_the_answers(world):
    label = world.label("gone")
    made = add(world, labels=[label])
    world.call(world.admin, "DELETE", f"/api/v1/labels/{label}")
    assert world.ok(world.get(world.admin, f"{ANSWERS}/{made['id']}"))["labels"] == []


# --- the CSV import -----------------------------------------------------------------------------
GOOD_CSV = (
    "question,answer,labels,language,question_pt,answer_pt\n"
    'Help?,"Call 188, any time.",Legal|violence,en,Ajuda?,Ligue 188.\n'
    "\n"
    "Hours?,8 to 18,,,,\n"
)


def test_a_csv_imports_every_row(world):
    legal, violence = world.label("legal"), world.label("Violence")
    imported = world.ok(world.post(world.admin, f"{ANSWERS}/import", {"csv": GOOD_CSV}), 201)
    assert imported["imported"] == 2
    first = imported["answers"][0]
    assert first["answer"] == "Call 188, any time." and first["language"] == "en"
    assert {label["id"] for label in first["labels"]} == {legal, violence}
    assert first["translations"] == [
        {"language": "pt", "question": "Ajuda?", "answer": "Ligue 188."}
    ]
    assert questions(world, world.admin) == ["Help?", "Hours?"]


def test_a_csv_with_bad_rows_imports_nothing_and_names_their_lines(world):
    world.label("legal")
    add(world, "Already there?")
    bad = (
        "question,answer,labels,question_es,answer_es\n"
        "Fine?,Fine,legal,,\n"
        ",No question,,,\n"  # line 3
        '"Multi\nline?",ok,nope,,\n'  # lines 4-5: an unknown label
        "Half?,ok,,¿Medio?,\n"  # line 6: a translation without its answer
    )
    response = world.post(world.admin, f"{ANSWERS}/import", {"csv": bad})
    assert response.status_code == 422 and response.json["error"] == "INVALID_FIELDS"
    fields = response.json["fields"]
    assert set(fields) == {"line 3", "line 4", "line 6"}
    assert "question" in fields["line 3"][0] and "nope" in fields["line 4"][0]
    assert "answer_es" in fields["line 6"][0]
    assert questions(world, world.admin) == ["Already there?"]  # all or nothing


@pytest.mark.parametrize(
    "csv, where",
    [
        ("text,answer\nq,a\n", "line 1"),
        ("question,answer,question_fr\nq,a,b\n", "line 1"),
        ("question,answer\n", "file"),
        ("question,answer\n" + "q,a\n" * 1001, "line 1002"),
    ],
)
def test_a_csv_that_does_not_fit_is_refused(world, csv, where):
    response = world.post(world.admin, f"{ANSWERS}/import", {"csv": csv})
    assert response.status_code == 422 and where in response.json["fields"]
    assert questions(world, world.admin) == []


def test_the_import_is_bounded(world):
    response = world.post(world.admin, f"{ANSWERS}/import", {"csv": "x" * (512 * 1024 + 1)})
    assert response.status_code == 400 and "csv" in response.json["fields"]


# --- must start from an answer ------------------------------------------------------------------
def test_partners_must_start_from_an_answer_when_the_org_says_so(world):
    label = world.label()
    partner = world.partner(labels=(label,))
    agent = world.user(partner)
    first, second = world.message([label]), world.message([label])
    made = add(world)
    assert world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"must_use_answers": True}))[
        "must_use_answers"
    ]
    refused = world.post(agent, f"/api/v1/messages/{first}/reply", {"text": "hi"})
    assert refused.status_code == 400 and refused.json["error"] == "ANSWER_REQUIRED"
    unknown = world.post(agent, f"/api/v1/messages/{first}/reply", {"text": "hi", "answer": "x"})
    assert unknown.status_code == 422 and "answer" in unknown.json["fields"]
    assert world.events(ev.OUTGOING_REQUESTED) == []
    edited = {"text": "Call 188 now.", "answer": made["id"]}
    world.ok(world.post(agent, f"/api/v1/messages/{first}/reply", edited), 201)
    case = world.open_case(agent, second, partner)
    in_case = world.post(agent, f"/api/v1/cases/{case['id']}/reply", {"text": "hi"})
    assert in_case.status_code == 400 and in_case.json["error"] == "ANSWER_REQUIRED"
    world.ok(world.post(agent, f"/api/v1/cases/{case['id']}/reply", edited), 201)
    # administrators are not bound by it
    world.ok(world.post(world.admin, f"/api/v1/cases/{case['id']}/reply", {"text": "hi"}), 201)
    assert len(world.events(ev.OUTGOING_REQUESTED)) == 3


def test_without_the_setting_an_answer_is_optional_but_must_be_visible(world):
    mine, theirs = world.label(), world.label()
    partner = world.partner(restricted=True, labels=(mine,))
    agent = world.user(partner)
    hidden = add(world, labels=[theirs])
    message = world.message([mine])
    wrong = world.post(
        agent, f"/api/v1/messages/{message}/reply", {"text": "x", "answer": hidden["id"]}
    )
    assert wrong.status_code == 422
    world.ok(world.post(agent, f"/api/v1/messages/{message}/reply", {"text": "x"}), 201)


def test_a_cases_first_message_must_start_from_an_answer_too(world):
    label = world.label()
    partner = world.partner(labels=(label,))
    agent = world.user(partner)
    message = world.message([label])
    made = add(world)
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"must_use_answers": True}))
    body = {"summary": "s", "partner": partner, "message": message, "reply": "hi"}
    refused = world.post(agent, "/api/v1/cases", body)
    assert refused.status_code == 400 and refused.json["error"] == "ANSWER_REQUIRED"
    assert world.events(ev.CASE_OPENED) == []  # nothing opened, nothing sent
    assert world.events(ev.OUTGOING_REQUESTED) == []
    opened = world.ok(world.post(agent, "/api/v1/cases", body | {"answer": made["id"]}), 201)
    assert opened["state"] == "open" and len(world.events(ev.OUTGOING_REQUESTED)) == 1
    # Without a first message there is nothing to start from an answer.
    other = world.message([label])
    world.ok(
        world.post(agent, "/api/v1/cases", {"summary": "s", "partner": partner, "message": other}),
        201,
    )

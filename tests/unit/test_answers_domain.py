"""The pure rules of ready-made answers: language codes, choosing a text with fallback, the
language filter, who sees an answer, the must-use rule, and reading a CSV row by row."""

from __future__ import annotations

import pytest

from services.cases import answers_domain as d
from services.cases.domain import Actor, Refused

EN = d.AnswerText("en", "Hours?", "8 to 6")
PT = d.AnswerText("pt", "Horário?", "8h às 18h")
PT_BR = d.AnswerText("pt-br", "Horário?", "das 8h às 18h")


@pytest.mark.parametrize(
    "raw, code",
    [("pt", "pt"), (" PT_br ", "pt-br"), ("ar", "ar"), ("", None), ("english", None), ("p", None)],
)
def test_language_codes(raw, code):
    assert d.language_code(raw) == code


def test_choosing_a_text_falls_back_to_the_default():
    assert d.choose_text(None, EN, {"pt": PT}) == EN
    assert d.choose_text("pt", EN, {"pt": PT}) == PT
    assert d.choose_text("pt-BR", EN, {"pt": PT}) == PT  # the base language will do
    assert d.choose_text("pt-br", EN, {"pt": PT, "pt-br": PT_BR}) == PT_BR  # exact first
    assert d.choose_text("fr", EN, {"pt": PT}) == EN
    assert d.choose_text("en-gb", EN, {}) == EN


def test_the_language_filter():
    assert d.speaks("pt", None, set())  # no language said: it may suit anyone
    assert d.speaks("pt", "en", {"pt-br"}) and d.speaks("en", "en", set())
    assert not d.speaks("fr", "en", {"pt"})
    assert d.speaks(None, "en", set())


def actor(role="agent", restricted=False, labels=()):
    return Actor(
        "o", "u", "U", role, None if role == "administrator" else "p", restricted, frozenset(labels)
    )


def test_who_sees_an_answer():
    assert d.can_see_answer(actor("administrator"), {"x"})
    assert d.can_see_answer(actor(), {"x"})  # unrestricted
    restricted = actor(restricted=True, labels=("a",))
    assert d.can_see_answer(restricted, set()) and d.can_see_answer(restricted, {"a", "b"})
    assert not d.can_see_answer(restricted, {"b"})


def test_the_must_use_rule():
    d.check_reply_answer(False, actor(), None)
    d.check_reply_answer(True, actor("administrator"), None)
    d.check_reply_answer(True, actor(), "answer-1")
    with pytest.raises(Refused) as refused:
        d.check_reply_answer(True, actor(), None)
    assert refused.value.code == "ANSWER_REQUIRED"


LABELS = {"legal": "L1", "violence": "L2"}


def test_good_rows_are_read_with_labels_and_translations():
    rows, problems = d.read_answer_rows(
        "\ufeffQuestion,Answer,Labels,Language,question_PT,answer_pt\n"
        '"Help?","Call 188,\nany time.",Legal | violence,EN,Ajuda?,Ligue.\n'
        "Hours?,8 to 6,,,,\n",
        LABELS,
    )
    assert problems == []
    assert [r.line for r in rows] == [2, 4]  # a quoted line break: the next row is on line 4
    assert rows[0].labels == ("L1", "L2") and rows[0].language == "en"
    assert rows[0].translations == (d.AnswerText("pt", "Ajuda?", "Ligue."),)
    assert rows[1].translations == () and rows[1].labels == ()


def test_bad_rows_are_named_by_line():
    _rows, problems = d.read_answer_rows(
        "question,answer,language,question_es,answer_es\n"
        ",x,,,\n"
        "q," + "a" * 4097 + ",,,\n"
        "q,a,xx-!,,\n"
        "q,a,es,p,r\n"
        "q,a,,p,\n"
        "q,a,,,,extra\n",
        LABELS,
    )
    assert [(p.line, len(p.problems)) for p in problems] == [
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
        (6, 1),
        (7, 1),
    ]
    assert "question" in problems[0].problems[0] and "4096" in problems[1].problems[0]


@pytest.mark.parametrize(
    "text",
    [
        "answer\nx\n",
        "question,answer,colour\nq,a,red\n",
        "question,answer,question_pt\nq,a,p\n",
        "question,answer,answer\nq,a,a\n",
    ],
)
def test_bad_headers_are_line_1(text):
    rows, problems = d.read_answer_rows(text, LABELS)
    assert rows == [] and problems[0].line == 1


def test_empty_and_oversized_files():
    assert d.read_answer_rows("question,answer\n\n", LABELS)[1][0].line == 0
    big = "question,answer\n" + "q,a\n" * (d.MAX_IMPORT_ROWS + 1)
    assert d.read_answer_rows(big, LABELS)[1][-1].line == d.MAX_IMPORT_ROWS + 2
    assert d.read_answer_rows("x" * (d.MAX_IMPORT_CHARS + 1), LABELS)[1][0].line == 0
    assert d.read_answer_rows("question,answer\nq\x00,a\n", LABELS)[1][0].line == 0

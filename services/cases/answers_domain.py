"""Pure rules of ready-made answers: language codes, which answers a partner sees, which text of
an answer suits a contact's language (falling back to its default text), the must-use rule of
replies, and reading a CSV of answers row by row with each row's problems. No I/O."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass

from services.cases.domain import Actor, Refused
from shared.text import has_forbidden_chars

MAX_QUESTION = 500
MAX_ANSWER = 4096  # a reply's own limit: an answer is the start of a reply
MAX_LABELS = 20
MAX_TRANSLATIONS = 20
MAX_IMPORT_ROWS = 1000
MAX_IMPORT_CHARS = 512 * 1024
LANGUAGE_RULE = "a language code such as pt, es, fr, ar or pt-br"
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})?")


def language_code(value: str | None) -> str | None:
    """``value`` as a language code (lower case, ``-`` between the parts: ``pt_BR`` ->
    ``pt-br``), or None if it is not one."""
    if not value:
        return None
    code = value.strip().lower().replace("_", "-")
    return code if _LANGUAGE.fullmatch(code) else None


# The flow engine writes a contact's language in ISO 639-3 ("por"); answers use the two-letter
# codes of ISO 639-1 where there is one. The languages of the product's users and their regions.
_ENGINE_LANGUAGES = {
    "ara": "ar",
    "amh": "am",
    "aze": "az",
    "ben": "bn",
    "bos": "bs",
    "deu": "de",
    "eng": "en",
    "fas": "fa",
    "fra": "fr",
    "hau": "ha",
    "hin": "hi",
    "ibo": "ig",
    "ind": "id",
    "ita": "it",
    "kin": "rw",
    "khm": "km",
    "lin": "ln",
    "lug": "lg",
    "mlg": "mg",
    "msa": "ms",
    "mya": "my",
    "nep": "ne",
    "nld": "nl",
    "nya": "ny",
    "orm": "om",
    "pol": "pl",
    "por": "pt",
    "pus": "ps",
    "ron": "ro",
    "rus": "ru",
    "sna": "sn",
    "som": "so",
    "spa": "es",
    "sqi": "sq",
    "srp": "sr",
    "swa": "sw",
    "tgl": "tl",
    "tha": "th",
    "tir": "ti",
    "tur": "tr",
    "twi": "tw",
    "ukr": "uk",
    "urd": "ur",
    "uzb": "uz",
    "vie": "vi",
    "wol": "wo",
    "xho": "xh",
    "yor": "yo",
    "zho": "zh",
    "zul": "zu",
}


def engine_language(value: str | None) -> str | None:
    """A contact's language as the engine gives it (``por``), as answers write it (``pt``);
    a code with no two-letter form stays as it is; None when there is none."""
    code = language_code(value)
    if code is None:
        return None
    return _ENGINE_LANGUAGES.get(code, code)


def _same_language(wanted: str, have: str | None) -> bool:
    """``pt`` suits ``pt-br`` and the other way round: the base languages match."""
    return have is not None and wanted.split("-")[0] == have.split("-")[0]


@dataclass(frozen=True)
class AnswerText:
    language: str | None
    question: str
    answer: str


def choose_text(
    wanted: str | None, default: AnswerText, translations: Mapping[str, AnswerText]
) -> AnswerText:
    """The answer's text in the contact's language: the default text if it is in that language
    (or no language is wanted), else the translation into exactly that language, else one into
    the same base language, else the default text."""
    wanted = language_code(wanted)
    if wanted is None or default.language == wanted:
        return default
    if wanted in translations:
        return translations[wanted]
    if _same_language(wanted, default.language):
        return default
    for language, text in sorted(translations.items()):
        if _same_language(wanted, language):
            return text
    return default


def speaks(wanted: str | None, default_language: str | None, translated: Set[str]) -> bool:
    """Whether an answer suits a language filter: it has a text in that language, or its default
    text says no language (it may suit anyone)."""
    wanted = language_code(wanted)
    if wanted is None or default_language is None:
        return True
    return any(_same_language(wanted, have) for have in (default_language, *translated))


def can_see_answer(actor: Actor, label_ids: Set[str]) -> bool:
    """Administrators and unrestricted partners see every answer; a restricted partner sees the
    answers with no label and those with one of its labels."""
    if actor.is_admin or not actor.restricted:
        return True
    return not label_ids or bool(set(label_ids) & actor.partner_labels)


def check_reply_answer(must_use: bool, actor: Actor, answer_id: str | None) -> None:
    """Where the org requires it, a partner's reply says which ready-made answer it started from
    (its text may have been edited); administrators are not bound by it."""
    if must_use and not actor.is_admin and not answer_id:
        raise Refused(
            "ANSWER_REQUIRED",
            "This org requires replies to start from a ready-made answer: give its id as answer.",
        )


# --- a CSV of answers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerRow:
    """One row of a CSV of answers, valid: its line in the file, the answer and its labels (ids)."""

    line: int
    question: str
    answer: str
    language: str | None
    labels: tuple[str, ...]
    translations: tuple[AnswerText, ...]


@dataclass(frozen=True)
class RowProblem:
    line: int  # 1 is the header; 0 is the file as a whole
    problems: tuple[str, ...]


_TRANSLATED = re.compile(r"(question|answer)_(.+)")


def read_answer_rows(
    text: str, labels_by_name: Mapping[str, str]
) -> tuple[list[AnswerRow], list[RowProblem]]:
    """The rows of a CSV of answers, and the problems of those that do not fit (importing is all
    or nothing: any problem means none is imported). Columns: ``question``, ``answer``,
    ``labels`` (names separated by ``|``, matched without regard to case against
    ``labels_by_name``, lower-case name -> id), ``language``, and ``question_<lang>`` /
    ``answer_<lang>`` pairs for translations."""
    if len(text) > MAX_IMPORT_CHARS:
        return [], [RowProblem(0, (f"The file is over {MAX_IMPORT_CHARS} characters.",))]
    if has_forbidden_chars(text):
        return [], [RowProblem(0, ("The file holds NUL characters or unpaired surrogates.",))]
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        return [], [RowProblem(1, (f"Not CSV: {exc}.",))]
    languages, problem = _read_header(header)
    if problem:
        return [], [RowProblem(1, (problem,))]
    rows: list[AnswerRow] = []
    problems: list[RowProblem] = []
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            problems.append(RowProblem(start, (f"Not CSV: {exc}.",)))
            break
        line = reader.line_num
        if cells is None:
            break
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(rows) + len(problems) >= MAX_IMPORT_ROWS:
            problems.append(RowProblem(start, (f"More than {MAX_IMPORT_ROWS} answers.",)))
            break
        values = dict(zip(header, (cell.strip() for cell in cells), strict=False))
        row, found = _read_row(start, values, languages, labels_by_name, len(cells) > len(header))
        if found:
            problems.append(RowProblem(start, tuple(found)))
        elif row is not None:
            rows.append(row)
    if not rows and not problems:
        problems.append(RowProblem(0, ("The file has no answers.",)))
    return rows, problems


def _read_header(header: list[str]) -> tuple[list[str], str | None]:
    if "question" not in header or "answer" not in header:
        return [], "The first line must name the columns, question and answer among them."
    if len(set(header)) != len(header):
        return [], "A column is named twice."
    languages: list[str] = []
    for name in header:
        if name in ("question", "answer", "labels", "language"):
            continue
        match = _TRANSLATED.fullmatch(name)
        code = language_code(match.group(2)) if match else None
        if code is None:
            return [], f"Unknown column {name[:40]!r}: question_<language> and answer_<language>."
        partner = f"{'answer' if match.group(1) == 'question' else 'question'}_{match.group(2)}"
        if partner not in header:
            return [], f"Column {name[:40]!r} has no {partner[:40]!r} beside it."
        if match.group(1) == "question":
            languages.append(match.group(2))
    return languages, None


def _read_row(
    line: int,
    values: dict[str, str],
    languages: list[str],
    labels_by_name: Mapping[str, str],
    too_many_cells: bool,
) -> tuple[AnswerRow | None, list[str]]:
    found: list[str] = []
    if too_many_cells:
        found.append("More cells than columns.")
    question, answer = values.get("question", ""), values.get("answer", "")
    found += _text_problems("question", question, MAX_QUESTION)
    found += _text_problems("answer", answer, MAX_ANSWER)
    language = None
    if raw := values.get("language", ""):
        language = language_code(raw)
        if language is None:
            found.append(f"The language must be {LANGUAGE_RULE}.")
    label_ids: list[str] = []
    for name in (n.strip() for n in values.get("labels", "").split("|")):
        if not name:
            continue
        label = labels_by_name.get(name.lower())
        if label is None:
            found.append(f"No label is called {name[:64]!r}.")
        elif label not in label_ids:
            label_ids.append(label)
    if len(label_ids) > MAX_LABELS:
        found.append(f"At most {MAX_LABELS} labels.")
    translations: list[AnswerText] = []
    for raw_language in languages:
        asked = values.get(f"question_{raw_language}", "")
        said = values.get(f"answer_{raw_language}", "")
        if not asked and not said:
            continue
        code = language_code(raw_language)
        if code in {t.language for t in translations}:
            found.append(f"Two columns translate into {code}.")
        if code == language:
            found.append(f"The {code} translation repeats the answer's own language.")
        found += _text_problems(f"question_{raw_language}", asked, MAX_QUESTION)
        found += _text_problems(f"answer_{raw_language}", said, MAX_ANSWER)
        translations.append(AnswerText(code, asked, said))
    if found:
        return None, found
    return AnswerRow(line, question, answer, language, tuple(label_ids), tuple(translations)), []


def _text_problems(column: str, value: str, longest: int) -> list[str]:
    if not value:
        return [f"The {column} is empty."]
    if len(value) > longest:
        return [f"The {column} is over {longest} characters."]
    return []

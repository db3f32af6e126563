"""Exports: formula neutralising and row shaping (pure), the API (who may see and download
what), what a file holds (visibility, no URN, phone number or contact name), and the worker on
the embedded default: building, a redelivered event, a crashed or taken-over build, a failure,
and the retention sweep."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from openpyxl import load_workbook
from sqlalchemy import delete, select, update

from services.cases import worker
from services.cases.export_files import XlsxWriter, csv_cell, neutralise
from services.cases.handlers import export_kinds, exports
from services.cases.handlers.export_kinds import delay_seconds, message_row, reply_row
from services.cases.models import Export, Notification
from shared import events as ev
from shared.bus.dispatch import Outcome
from tests.cases_helpers import CONTACT_NAME, PHONE, at
from tests.unit.test_cases_access import identifying

FORMULA = '=HYPERLINK("http://evil.example","click")'


# --- pure ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["=1+1", "+55 11", "-2", "@SUM(A1)", "\t=1", "\r=1", FORMULA, "=", "@"]
)
def test_text_a_spreadsheet_would_run_gets_an_apostrophe(text):
    assert neutralise(text) == "'" + text
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["plain", "", "a=b", " =1", "'=1", "C-ABC12345", 12, -3, True])
def test_other_values_are_left_alone(value):
    assert neutralise(value) == value


def test_cells_times_and_nothing():
    moment = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    assert csv_cell(moment) == "2026-11-21T10:00:00+00:00"
    assert csv_cell(None) == ""


def test_xlsx_cells_read_back_as_written(tmp_path):
    moment = datetime(2026, 11, 21, 13, 30, 15, tzinfo=timezone(timedelta(hours=3)))
    row = [
        moment,
        "a\x00b\x1fc\td",  # what XML cannot carry is dropped
        ' <b>&"x"</b> ',  # markup stays text, spaces kept
        "مرحبا صحة",
        None,
        "",
        True,
        False,
        12,
        -3.25,
        "=1+1",
    ]
    path = tmp_path / "x.xlsx"
    writer = XlsxWriter(path, [f"c{n}" for n in range(len(row))], "a/b: [c]?")
    writer.write(row)
    writer.close()
    book = load_workbook(path)
    assert book.sheetnames == ["a b   c  "]  # characters a sheet name cannot hold are replaced
    sheet = book.active
    assert [c.value for c in sheet[2]] == [
        datetime(2026, 11, 21, 10, 30, 15),  # Excel keeps no zone: UTC
        "abc\td",
        ' <b>&"x"</b> ',
        "مرحبا صحة",
        None,
        None,
        True,
        False,
        12,
        -3.25,
        "'=1+1",
    ]
    assert sheet["A2"].is_date and sheet["I2"].data_type == "n"


def test_message_and_reply_rows():
    moment = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    message = SimpleNamespace(
        id="m1",
        received_at=moment,
        ref="C-ABC12345",
        text=None,
        flagged=True,
        archived=False,
        case_id=None,
    )
    assert message_row(message, "A; B") == [
        "m1",
        moment,
        "C-ABC12345",
        "",
        "A; B",
        True,
        False,
        "",
    ]
    assert len(message_row(message, "")) == len(export_kinds.MESSAGE_COLUMNS)
    reply = SimpleNamespace(
        id="o1",
        created_at=moment + timedelta(minutes=90),
        user_name="Ana",
        partner_name=None,
        ref="C-ABC12345",
        case_id="c1",
        reply_to="m1",
        received_at=moment,
        delivery="sent",
        sent_on=None,
    )
    row = reply_row(reply)
    assert len(row) == len(export_kinds.REPLY_COLUMNS)
    assert row[5:10] == [True, "c1", "m1", moment, 5400]
    assert delay_seconds(None, moment) is None


def test_an_xlsx_formula_is_read_back_as_text(tmp_path):
    path = tmp_path / "x.xlsx"
    writer = XlsxWriter(path, ["text", "=header"], "messages")
    writer.write([FORMULA, -1])
    writer.close()
    sheet = load_workbook(path).active
    assert [c.value for c in sheet[1]] == ["text", "'=header"]
    assert sheet["A2"].value == "'" + FORMULA and sheet["A2"].data_type == "s"
    assert sheet["B2"].value == -1


def test_past_a_sheets_row_limit_the_rows_go_on_in_another_sheet(tmp_path, monkeypatch):
    monkeypatch.setattr("services.cases.export_files.XLSX_ROWS", 3)
    path = tmp_path / "x.xlsx"
    writer = XlsxWriter(path, ["n"], "messages")
    for n in range(5):
        writer.write([n])
    writer.close()
    book = load_workbook(path)
    assert book.sheetnames == ["messages", "messages 2", "messages 3"]
    assert [[c.value for c in row] for row in book["messages 2"].iter_rows()] == [["n"], [2], [3]]


# --- reading files back -------------------------------------------------------------------------
def table(world, person, export) -> list[list[str]]:
    """An export's file as rows of text (the header first), whichever its format."""
    response = world.get(person, export["file"])
    assert response.status_code == 200, response.json
    if export["format"] == "csv":
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    book = load_workbook(io.BytesIO(response.data), read_only=True)
    rows = [row for sheet in book.worksheets for row in sheet.iter_rows(values_only=True)]
    book.close()

    def text(value):
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC).isoformat()
        return "" if value is None else str(value)

    return [[text(v) for v in row] for row in rows]


@pytest.fixture
def desk(world):
    """Two labels; partner A restricted to label A, with an agent and a colleague."""
    label_a, label_b = world.label("A"), world.label("B")
    partner = world.partner("Partner A", restricted=True, labels=(label_a,))
    return SimpleNamespace(
        a=label_a,
        b=label_b,
        partner=partner,
        agent=world.user(partner, name="Ana"),
        colleague=world.user(partner, name="Caio"),
    )


# --- the API ------------------------------------------------------------------------------------
def test_an_export_is_its_requesters_alone(world, desk):
    world.message([desk.a])
    asked = world.ok(world.post(desk.agent, "/api/v1/exports", {"kind": "messages"} | CSV), 202)
    assert asked["state"] == "queued" and asked["file"] is None
    file = f"/api/v1/exports/{asked['id']}/file"
    not_ready = world.get(desk.agent, file)
    assert not_ready.status_code == 409 and not_ready.json["error"] == "EXPORT_NOT_READY"
    [requested] = world.events(ev.EXPORT_REQUESTED)
    assert requested.data == {"export_id": asked["id"], "kind": "messages", "format": "csv"}
    assert world.deliver(requested) is Outcome.ACK
    for stranger in (desk.colleague, world.admin):
        assert world.get(stranger, f"/api/v1/exports/{asked['id']}").status_code == 404
        assert world.get(stranger, file).status_code == 404
        assert world.ok(world.get(stranger, "/api/v1/exports"))["items"] == []
    done = world.ok(world.get(desk.agent, "/api/v1/exports"))["items"]
    assert [e["id"] for e in done] == [asked["id"]] and done[0]["state"] == "done"
    download = world.get(desk.agent, file)
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment; filename=messages-")
    assert download.headers["Cache-Control"] == "no-store"


CSV = {"format": "csv"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "contacts", "format": "csv"}, "kind"),
        ({"kind": "messages", "format": "pdf"}, "format"),
        ({"kind": "messages", "format": "csv", "filters": {"folder": "sent"}}, "filters"),
        ({"kind": "cases", "format": "csv", "filters": {"state": "lost"}}, "filters"),
        ({"kind": "cases", "format": "csv", "filters": {"colour": "red"}}, "filters"),
        ({"kind": "replies", "format": "csv", "filters": {"after": "yesterday"}}, "filters"),
        ({"format": "csv"}, "kind"),
    ],
)
def test_bad_requests_name_their_field(world, body, field):
    response = world.post(world.admin, "/api/v1/exports", body)
    assert response.status_code == 400 and field in response.json["fields"]
    assert world.events(ev.EXPORT_REQUESTED) == []


def test_a_user_has_a_few_exports_built_at_once(world):
    for _ in range(exports.MAX_PENDING):
        world.ok(world.post(world.admin, "/api/v1/exports", {"kind": "cases"} | CSV), 202)
    refused = world.post(world.admin, "/api/v1/exports", {"kind": "cases"} | CSV)
    assert refused.status_code == 409 and refused.json["error"] == "TOO_MANY_EXPORTS"


# --- what a file holds --------------------------------------------------------------------------
@pytest.mark.parametrize("file_format", ["csv", "xlsx"])
def test_a_restricted_partners_export_holds_only_its_labels(world, desk, file_format):
    mine = {world.message([desk.a], text=f"mine {n}") for n in range(3)}
    both = world.message([desk.a, desk.b], text="both")
    for n in range(4):
        world.message([desk.b], text=f"theirs {n}")
    export = world.export(desk.agent, "messages", file_format)
    assert export["state"] == "done" and export["total"] == export["progress"] == 4
    header, *rows = table(world, desk.agent, export)
    assert header == list(export_kinds.MESSAGE_COLUMNS)
    assert {row[0] for row in rows} == mine | {both}
    assert {row[4] for row in rows} == {"A"}  # label B is not theirs to see, even on "both"
    everything = world.export(world.admin, "messages", file_format)
    assert everything["total"] == 8
    labels = {row[0]: row[4] for row in table(world, world.admin, everything)[1:]}
    assert labels[both] == "A; B"


def test_filters_are_the_listings(world, desk):
    world.message([desk.a], text="escola", received_at=at(-100))
    wanted = world.message([desk.a], text="na escola hoje", received_at=at(-50))
    world.message([desk.a], text="casa", received_at=at(-40))
    export = world.export(
        world.admin, "messages", "csv", q="escola", after=at(-60).isoformat(), label=desk.a
    )
    assert [row[0] for row in table(world, world.admin, export)[1:]] == [wanted]
    assert export["filters"]["q"] == "escola"
    hidden = world.export(desk.agent, "messages", "csv", label=desk.b)
    assert hidden["state"] == "done" and hidden["total"] == 0
    assert table(world, desk.agent, hidden) == [list(export_kinds.MESSAGE_COLUMNS)]


def test_no_file_carries_a_urn_phone_number_or_contact_name(world, desk):
    world.ok(world.call(world.admin, "PATCH", "/api/v1/org", {"display_field": "phone"}))
    fields = {"name": CONTACT_NAME, "phone": PHONE, "urn": "whatsapp:5511987654321"}
    messages = [world.message([desk.a], fields=fields, text=f"oi {n}") for n in range(3)]
    case = world.open_case(desk.agent, messages[0], desk.partner)
    world.ok(world.post(desk.agent, f"/api/v1/cases/{case['id']}/reply", {"text": "olá"}), 201)
    world.ok(world.post(desk.agent, f"/api/v1/messages/{messages[1]}/reply", {"text": "oi"}), 201)
    shown = world.ok(world.get(desk.agent, f"/api/v1/messages/{messages[2]}"))["contact"]
    assert shown["display"] == PHONE  # the API shows the org's choice; a file never does
    scanned = 0
    for kind in ("messages", "cases", "replies"):
        for file_format in ("csv", "xlsx"):
            for folder in ("inbox", "archived"):
                filters = {"folder": folder} if kind == "messages" else {}
                export = world.export(desk.agent, kind, file_format, **filters)
                rows = table(world, desk.agent, export)
                assert len(rows) > 1, (kind, folder)
                text = "\n".join(",".join(row) for row in rows)
                assert not identifying(text), (kind, file_format, identifying(text))
                assert re.search(r"\bC-[0-9A-Z]{8}\b", text)  # contacts by reference
                scanned += 1
    assert scanned == 12


def test_a_formula_a_contact_wrote_is_plain_text_in_both_formats(world, desk):
    world.message([desk.a], text=FORMULA)
    for file_format in ("csv", "xlsx"):
        export = world.export(desk.agent, "messages", file_format)
        [_, row] = table(world, desk.agent, export)
        assert row[3] == "'" + FORMULA


def test_cases_and_replies(world, desk):
    first = world.message([desk.a], text="socorro", received_at=at(-30))
    case = world.open_case(desk.agent, first, desk.partner, user=desk.agent.id)
    world.ok(world.post(desk.agent, f"/api/v1/cases/{case['id']}/reply", {"text": "olá"}), 201)
    alone = world.message([desk.a], received_at=at(-20))
    world.ok(world.post(desk.agent, f"/api/v1/messages/{alone}/reply", {"text": "oi"}), 201)
    cases = world.export(desk.agent, "cases", "xlsx", state="open")
    [header, row] = table(world, desk.agent, cases)
    assert header == list(export_kinds.CASE_COLUMNS)
    assert row[:5] == [case["id"], case["contact"]["ref"], "open", "Partner A", "Ana"]
    assert world.export(desk.agent, "cases", "csv", state="closed")["total"] == 0
    replies = world.export(desk.agent, "replies", "csv")
    header, *rows = table(world, desk.agent, replies)
    assert header == list(export_kinds.REPLY_COLUMNS)
    by_message = {row[7]: row for row in rows}
    assert set(by_message) == {first, alone}
    in_case, direct = by_message[first], by_message[alone]
    assert in_case[2:7] == ["Ana", "Partner A", case["contact"]["ref"], "True", case["id"]]
    assert direct[5:7] == ["False", ""] and direct[10] == "pending"
    sent = datetime.fromisoformat(direct[1])
    assert int(direct[9]) == int((sent - at(-20)).total_seconds()) > 0
    other = world.user(world.partner("Partner B"))
    assert world.export(other, "replies", "csv")["total"] == 0  # another partner's replies


# --- the worker ---------------------------------------------------------------------------------
def export_row(world, export_id) -> Export:
    with world.store.db.session() as session:
        return session.get(Export, export_id)


def notifications_of(world, export_id) -> int:
    with world.store.db.session() as session:
        return len(
            session.scalars(select(Notification).where(Notification.export_id == export_id)).all()
        )


def ask(world, person, kind="messages", **filters):
    asked = world.ok(
        world.post(person, "/api/v1/exports", {"kind": kind, "format": "csv", "filters": filters}),
        202,
    )
    [event] = [e for e in world.events(ev.EXPORT_REQUESTED) if e.data["export_id"] == asked["id"]]
    return asked["id"], event


def build(world, export_id, **options):
    with world.store.unit_of_work() as uow:
        return exports.build_export(uow.session, world.settings, "unicef-br", export_id, **options)


def test_every_row_once_across_batches_even_at_the_same_moment(world, desk):
    same = at(5)
    wanted = {world.message([desk.a], received_at=same) for _ in range(7)}
    wanted |= {world.message([desk.a]) for _ in range(4)}
    export_id, _ = ask(world, world.admin)
    assert build(world, export_id, batch=3, progress_every=3) == "done"
    row = export_row(world, export_id)
    assert (row.state, row.progress, row.total, row.attempt) == ("done", 11, 11, 1)
    rows = table(
        world, world.admin, world.ok(world.get(world.admin, f"/api/v1/exports/{export_id}"))
    )
    assert sorted(r[0] for r in rows[1:]) == sorted(wanted)


def test_a_redelivered_event_does_nothing_again(world, desk):
    world.message([desk.a])
    export_id, event = ask(world, desk.agent)
    assert world.deliver(event) is Outcome.ACK
    first = export_row(world, export_id)
    path = world.settings.exports_path / first.file_name
    written = path.stat().st_mtime_ns
    with world.store.db.session() as session, session.begin():  # even without its inbox row
        session.execute(delete(world.store.inbox).where(world.store.inbox.event_id == event.id))
    assert world.deliver(event) is Outcome.ACK
    again = export_row(world, export_id)
    assert (again.state, again.attempt, again.finished_at) == ("done", 1, first.finished_at)
    assert path.stat().st_mtime_ns == written and notifications_of(world, export_id) == 1


def test_a_build_a_crashed_worker_left_running_is_restarted(world, desk):
    world.message([desk.a])
    export_id, event = ask(world, desk.agent)
    with world.store.db.session() as session, session.begin():
        session.execute(
            update(Export).where(Export.id == export_id).values(state="running", attempt=1)
        )
    folder = world.settings.exports_path
    folder.mkdir(parents=True)
    left = folder / f"{export_id}.1.partial"
    left.write_text("half a file")
    assert world.deliver(event) is Outcome.ACK
    row = export_row(world, export_id)
    assert (row.state, row.attempt, row.progress) == ("done", 2, 1)
    assert not left.exists() and sorted(p.name for p in folder.iterdir()) == [row.file_name]
    assert notifications_of(world, export_id) == 1


def test_a_build_taken_over_by_another_worker_stops_without_writing(world, desk, monkeypatch):
    for _ in range(5):
        world.message([desk.a])
    export_id, _ = ask(world, desk.agent)
    kind = export_kinds.KINDS["messages"]

    def read_then_lose_it(session, actor, filters, key, size):
        with world.store.db.session() as other, other.begin():  # another worker claims it
            other.execute(update(Export).where(Export.id == export_id).values(attempt=7))
        return kind.read(session, actor, filters, key, size)

    monkeypatch.setitem(
        export_kinds.KINDS,
        "messages",
        export_kinds.ExportKind(
            "messages", kind.filters, kind.columns, read_then_lose_it, kind.count
        ),
    )
    assert build(world, export_id, batch=2, progress_every=2) == "taken"
    row = export_row(world, export_id)
    assert (row.state, row.attempt, row.progress, row.file_name) == ("running", 7, 0, None)
    assert list(world.settings.exports_path.iterdir()) == []
    assert notifications_of(world, export_id) == 0


def test_a_failed_build_is_marked_and_not_retried(world, desk, monkeypatch):
    world.message([desk.a])
    export_id, event = ask(world, desk.agent)
    kind = export_kinds.KINDS["messages"]

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(
        export_kinds.KINDS,
        "messages",
        export_kinds.ExportKind("messages", kind.filters, kind.columns, broken, kind.count),
    )
    assert world.deliver(event) is Outcome.ACK
    shown = world.ok(world.get(desk.agent, f"/api/v1/exports/{export_id}"))
    assert shown["state"] == "failed" and shown["file"] is None
    assert world.get(desk.agent, f"/api/v1/exports/{export_id}/file").status_code == 409
    assert list(world.settings.exports_path.iterdir()) == []
    monkeypatch.undo()
    assert world.deliver(event) is Outcome.ACK
    assert export_row(world, export_id).state == "failed"
    assert notifications_of(world, export_id) == 0


def test_files_past_their_retention_are_deleted(world, desk):
    world.message([desk.a])
    old = world.export(desk.agent, "messages", "csv")
    path = world.settings.exports_path / export_row(world, old["id"]).file_name
    assert path.is_file()
    with world.store.db.session() as session:
        assert exports.sweep_expired(session, world.settings) == 0
    assert path.is_file()
    with world.store.db.session() as session, session.begin():  # the retention has passed
        session.execute(
            update(Export)
            .where(Export.id == old["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    shown = world.ok(world.get(desk.agent, f"/api/v1/exports/{old['id']}"))
    assert shown["state"] == "expired" and shown["file"] is None  # before the sweep, too
    assert world.get(desk.agent, f"/api/v1/exports/{old['id']}/file").status_code == 409
    [chore] = worker.chores(world.settings, world.store)  # the cases worker's, hourly
    chore.run()
    assert not path.exists()
    row = export_row(world, old["id"])
    assert (row.state, row.file_name) == ("expired", None)


def test_the_requester_is_told_when_it_is_ready(world, desk):
    world.message([desk.a])
    export = world.export(desk.agent, "messages", "xlsx")
    [told] = world.ok(world.get(desk.agent, "/api/v1/notifications"))["items"]
    assert (
        told["kind"] == "export_ready" and told["export"] == export["id"] and told["case"] is None
    )
    assert world.ok(world.get(desk.colleague, "/api/v1/notifications"))["items"] == []
    read = world.ok(world.post(desk.agent, f"/api/v1/notifications/{told['id']}/read"))
    assert read["read"] is True


def test_only_an_administrator_exports_the_unlabelled_folder(world, desk):
    body = {"kind": "messages", "format": "csv", "filters": {"folder": "unlabelled"}}
    assert world.post(desk.agent, "/api/v1/exports", body).status_code == 403
    world.message(labelled=True)
    export = world.export(world.admin, "messages", "csv", folder="unlabelled")
    assert export["state"] == "done" and export["total"] == 1

"""Reading CasePro's tickets_migrate files (``<Org>_cases.json``, ``<Org>_agents.csv``) as the
same records as the database, with ids of the reader's own for what the files name."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.cases.casepro.migrate_files import (
    MigrateExport,
    MigrateFileError,
    find_export,
    iter_json_array,
    parse_time,
    read_agents,
)
from services.cases.casepro.records import CaseproSource

CASES = [
    {
        "id": 4,
        "opened_on": "2024-12-04T15:11:42.123456+00:00",
        "closed_on": None,
        "summary": "Violência em casa, precisa de ajuda",
        "contact": "c-1",
        "assignee": {"partner": "ONG Acolher", "user": "diego@example.org"},
        "labels": ["Apagado", "Violência"],
    },
    {
        "id": 9,
        "opened_on": "2024-12-05T08:00:00+00:00",
        "closed_on": "2024-12-06T10:30:00+00:00",
        "summary": "Dúvida sobre saúde",
        "contact": "c-2",
        "assignee": {"partner": "Centro de Saúde Norte", "user": None},
        "labels": ["Saúde"],
    },
    {
        "id": 12,
        "opened_on": "2024-12-07T08:00:00+00:00",
        "closed_on": "2024-12-07T09:00:00+00:00",
        "summary": "",
        "contact": "c-1",
        "assignee": {"partner": "Antigo Parceiro", "user": "julia@example.org"},
        "labels": [],
    },
]
AGENTS = [
    ("Email", "Name", "Partner"),
    ("carla@example.org", "Carla Souza", "Centro de Saúde Norte"),
    ("Diego@Example.org", "Lima, Diego", "ONG Acolher"),
    ("", "Ivo Pereira", "Defensoria Pública"),
    ("carla@example.org", "Carla Souza", "Defensoria Pública"),
]


def write_export(folder, cases=CASES, agents=AGENTS, bom=True):
    """The files as CasePro writes them: json.dumps (\\u escapes), csv's excel dialect (CRLF)."""
    cases_path = folder / "Linha_Jovem_Rio_cases.json"
    cases_path.write_text(json.dumps(cases), encoding="utf-8")
    agents_path = folder / "Linha_Jovem_Rio_agents.csv"
    with agents_path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as out:
        csv.writer(out).writerows(agents)
    return cases_path, agents_path


@pytest.mark.parametrize("chunk_size", [1, 7, 64 * 1024])
def test_the_cases_array_is_streamed_object_by_object(chunk_size):
    text = json.dumps(CASES * 5)
    assert "\\u00ea" in text
    items = list(iter_json_array(io.StringIO(text), chunk_size=chunk_size))
    assert items == CASES * 5
    spaced = "\n " + json.dumps(CASES, indent=2) + " \n"
    assert list(iter_json_array(io.StringIO(spaced), chunk_size=chunk_size)) == CASES
    assert list(iter_json_array(io.StringIO(" [ ] "), chunk_size=chunk_size)) == []


@pytest.mark.parametrize(
    "text",
    ['{"id": 1}', '[{"id": 1}', '[{"id": 1} {"id": 2}]', "[1, 2]", '[{"id": 1},', "", '[{"id": '],
)
def test_a_broken_cases_file_is_an_error(text):
    with pytest.raises(MigrateFileError):
        list(iter_json_array(io.StringIO(text), chunk_size=4))


def test_times_are_read_in_utc():
    assert parse_time("2024-12-04T15:11:42.123456+00:00", "x") == datetime(
        2024, 12, 4, 15, 11, 42, 123456, tzinfo=UTC
    )
    local = parse_time("2024-12-04T12:00:00-03:00", "x")
    assert local == datetime(2024, 12, 4, 15, tzinfo=UTC) and local.utcoffset() == timedelta(0)
    assert parse_time("2024-12-04T15:00:00", "x").utcoffset() == timedelta(0)
    with pytest.raises(MigrateFileError, match="opened_on"):
        parse_time("yesterday", "case 1: opened_on")


def test_agents_file_with_bom_crlf_and_quoted_names():
    data = '\ufeffEmail,Name,Partner\r\na@x.org,"Lima, Diego",ONG\r\n\r\n,Ivo,ONG\r\n'
    agents = read_agents(io.StringIO(data, newline=""))
    assert [(a.email, a.name, a.partner) for a in agents] == [
        ("a@x.org", "Lima, Diego", "ONG"),
        ("", "Ivo", "ONG"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        "Name,Email,Partner\r\n",
        "",
        "Email,Name,Partner\r\na@x.org,A\r\n",
        "Email,Name,Partner\r\na@x.org,A,\r\n",
    ],
)
def test_a_broken_agents_file_is_an_error(data):
    with pytest.raises(MigrateFileError):
        read_agents(io.StringIO(data, newline=""))


def test_the_export_reads_as_a_source_with_ids_of_its_own(tmp_path):
    export = MigrateExport(*write_export(tmp_path))
    assert isinstance(export.org.name, str) and export.org.name == "Linha Jovem Rio"
    assert export.org.id is None
    for name in CaseproSource.__dict__:
        if not name.startswith("_") and name != "org":
            assert callable(getattr(export, name)), name

    partners = {p.name: p.id for p in export.partners()}
    assert list(partners) == sorted(partners)  # numbered by name, from 1
    assert set(partners) == {
        "Antigo Parceiro",
        "Centro de Saúde Norte",
        "Defensoria Pública",
        "ONG Acolher",
    }
    labels = {label.name: label.id for label in export.labels()}
    assert labels == {"Apagado": 1, "Saúde": 2, "Violência": 3}
    users = {u.email: u for u in export.users()}
    assert set(users) == {"carla@example.org", "Diego@Example.org", "julia@example.org"}
    assert {u.role for u in users.values()} == {"agent"}
    assert users["carla@example.org"].partner_id == partners["Centro de Saúde Norte"]
    assert users["Diego@Example.org"].full_name == "Lima, Diego"
    julia = users["julia@example.org"]  # assigned, but not in the agents file
    assert not julia.is_active and julia.partner_id == partners["Antigo Parceiro"]
    contacts = [(c.id, c.uuid) for c in export.contacts()]
    assert contacts == [(1, "c-1"), (2, "c-2")]

    cases = list(export.cases())
    assert [c.id for c in cases] == [4, 9, 12]
    first = cases[0]
    assert first.assignee_id == partners["ONG Acolher"]
    assert first.user_assignee_id == users["Diego@Example.org"].id  # emails match in any case
    assert first.label_ids == (labels["Apagado"], labels["Violência"])
    assert first.opened_on == datetime(2024, 12, 4, 15, 11, 42, 123456, tzinfo=UTC)
    assert first.closed_on is None and first.initial_message_id is None
    assert first.summary == "Violência em casa, precisa de ajuda"
    assert cases[1].user_assignee_id is None
    assert cases[2].contact_id == first.contact_id
    assert [c.id for c in export.cases(after_id=4)] == [9, 12]
    assert list(export.contacts(after_id=1)) == list(export.contacts())[1:]
    assert list(export.messages()) == list(export.actions()) == list(export.outgoing()) == []

    assert export.counts() == {
        "groups": 0,
        "fields": 0,
        "users": 3,
        "partners": 4,
        "labels": 3,
        "faqs": 0,
        "contacts": 2,
        "messages": 0,
        "outgoing": 0,
        "cases": 3,
        "actions": 0,
    }
    notes = "\n".join(export.notes())
    for said in (
        "does not tell partner managers from data analysts: its 2 users are read as agents",
        "1 rows of the agents file have no email",
        "1 rows of the agents file repeat an email",
        "1 users assigned to cases are not in the agents file",
        "1 partners appear only as assignees",
        "org administrators are not in the export",
    ):
        assert said in notes


def test_without_an_agents_file_the_assigned_users_are_known_by_email(tmp_path):
    cases_path, _ = write_export(tmp_path)
    export = MigrateExport(cases_path)
    assert {u.email for u in export.users()} == {"diego@example.org", "julia@example.org"}
    assert "no agents file" in export.notes()[0]


def test_an_agents_file_without_bom_reads_the_same(tmp_path):
    with_bom = MigrateExport(*write_export(tmp_path))
    assert MigrateExport(*write_export(tmp_path, bom=False)).users() == with_bom.users()


def test_a_case_missing_what_casepro_always_writes_is_an_error(tmp_path):
    broken = [dict(CASES[0], assignee={"user": None})]
    with pytest.raises(MigrateFileError, match="case #1: missing 'partner'"):
        MigrateExport(*write_export(tmp_path, cases=broken))
    broken = [dict(CASES[0], opened_on=None)]
    with pytest.raises(MigrateFileError, match="case 4: opened_on"):
        MigrateExport(*write_export(tmp_path, cases=broken))


def test_find_export(tmp_path):
    cases_path, agents_path = write_export(tmp_path)
    assert find_export(tmp_path) == (cases_path, agents_path)
    assert find_export(tmp_path, "Linha Jovem Rio") == (cases_path, agents_path)
    (tmp_path / "Outra_cases.json").write_text("[]")
    assert find_export(tmp_path, "Outra") == (tmp_path / "Outra_cases.json", None)
    with pytest.raises(MigrateFileError, match="found Linha_Jovem_Rio_cases.json, Outra"):
        find_export(tmp_path)

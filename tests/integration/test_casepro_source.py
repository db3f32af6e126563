"""Reading an org out of a CasePro database: a fresh database for this module, made from
tests/casepro/schema.sql and filled by tests/casepro/fixture.py (1,000 messages, 50 cases, and a
second org whose rows interleave with the first's and must never be read)."""

from __future__ import annotations

import unicodedata
import uuid
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from services.cases.casepro import source
from services.cases.casepro.migrate_files import MigrateExport
from services.cases.casepro.records import KINDS, Contact, Outgoing
from services.cases.casepro.rules import group_uuids, translate_rule
from services.cases.casepro.source import CaseproDatabase, CaseproError, OrgNotFound
from tests.casepro import templates
from tests.casepro.database import create_database, database_url, drop_database, load
from tests.casepro.fixture import Size
from tests.casepro.tickets_migrate import write_migrate_files
from tests.conftest import TEST_DATABASE_URL

pytestmark = pytest.mark.integration

STREAMS = ("contacts", "messages", "outgoing", "cases", "actions")


@pytest.fixture
def url(casepro):
    return casepro[0]


@pytest.fixture
def manifest(casepro):
    return casepro[1]


@pytest.fixture
def db(url, manifest):
    with CaseproDatabase(url, manifest.subdomain) as db:
        yield db


def read_all(db: CaseproDatabase) -> dict[str, list]:
    return {kind: list(getattr(db, kind)()) for kind in KINDS}


def test_it_reads_every_row_of_the_org_and_counts_them(db, manifest):
    read = read_all(db)
    assert db.counts() == dict(manifest.counts)
    assert {kind: len(rows) for kind, rows in read.items()} == dict(manifest.counts)
    assert manifest.counts["messages"] == 1000 and manifest.counts["cases"] == 50
    assert manifest.counts["labels"] == 20 and manifest.counts["users"] == 11


def test_no_row_of_the_other_org_is_read(db, url, manifest):
    # The other org's rows have ids that are multiples of 7 in every table; the main org's never.
    read = read_all(db)
    for kind in ("users", "partners", "labels", "faqs", *STREAMS):
        assert [row.id for row in read[kind] if row.id % 7 == 0] == [], kind
    assert {group.id for group in read["groups"]} == set(manifest.groups.values())
    assert {user.email for user in read["users"]} - {None} == {
        f"{u.key}@linhajovem.org.br" for u in templates.USERS if u.roles and u.has_email
    }
    with CaseproDatabase(url, manifest.other.subdomain) as other:
        assert other.org.id == manifest.other.org_id
        assert other.counts() == dict(manifest.other.counts)


def test_the_org_is_found_by_id_or_subdomain_and_its_settings_are_read(db, url, manifest):
    with CaseproDatabase(url, manifest.org_id) as by_id:
        assert by_id.org == db.org
    org = db.org
    assert (org.id, org.name, org.timezone) == (
        manifest.org_id,
        "Linha Jovem Rio",
        "America/Sao_Paulo",
    )
    assert org.follow_up_flow.uuid == manifest.special["follow_up_flow_uuid"]
    assert org.follow_up_flow.name == "Acompanhamento"
    assert org.banner.startswith("Atenção")
    with CaseproDatabase(url, manifest.other.subdomain) as other:
        assert other.org.follow_up_flow is None and other.org.banner is None


def test_an_unknown_org_or_a_database_that_is_not_casepro_is_said_so(url):
    with pytest.raises(OrgNotFound, match=r"'nowhere'.*linhajovem"):
        CaseproDatabase(url, "nowhere")
    with pytest.raises(CaseproError, match="not a CasePro database"):
        CaseproDatabase(database_url(url, "postgres"), "1")


def test_roles_are_mapped_administrator_first_then_manager_then_agent(db, manifest):
    users = {user.id: user for user in db.users()}
    ids = manifest.users
    expected = {
        ids[u.key]: templates.EXPECTED_ROLES.get(u.roles, "agent")
        for u in templates.USERS
        if u.roles
    }
    assert {user_id: user.role for user_id, user in users.items()} == expected
    assert 1 not in users and 2 not in users  # root and root2 hold no role
    assert ids["lara"] not in users  # a partner's user without a role
    assert users[ids["ivo"]].email is None
    assert users[ids["kleber"]].full_name == "Kleber Dias"  # no profile
    assert not users[ids["hugo"]].is_active
    assert users[ids["elisa"]].must_use_faq and not users[ids["fabio"]].must_use_faq
    assert users[ids["ana"]].partner_id is None
    assert users[ids["diego"]].partner_id == manifest.partners["acolher"]
    assert users[ids["julia"]].partner_id == manifest.partners["antigo"]


def test_partners_labels_and_answers(db, manifest):
    partners = {p.id: p for p in db.partners()}
    acolher = partners[manifest.partners["acolher"]]
    assert acolher.is_restricted
    assert acolher.label_ids == tuple(
        sorted(manifest.labels[n] for n in ("Violência", "Autoestima", "Apagado"))
    )
    assert not partners[manifest.partners["antigo"]].is_active
    labels = {label.name: label for label in db.labels()}
    assert not labels["Apagado"].is_active and labels["Apagado"].rule_tests is None
    assert labels["Denúncia"].rule_tests is None and labels["Denúncia"].uuid
    assert labels["Saúde"].watcher_ids == (manifest.users["carla"], manifest.users["elisa"])
    faqs = db.faqs()
    assert Counter(f.language for f in faqs) == {"por": 4, "spa": 2, "eng": 2, None: 1}
    translations = [f for f in faqs if f.parent_id is not None]
    assert len(translations) == 4 and all(f.label_ids == () for f in translations)


def test_every_rule_translates_or_says_why_not(db):
    uuids = group_uuids(db.groups())
    labels = {label.name: label for label in db.labels()}
    stored = labels["Saúde"].rule_tests[0]["keywords"][0]
    assert stored == unicodedata.normalize("NFKD", "saúde") != "saúde"  # as CasePro stores it
    results = {name: translate_rule(label.rule_tests, uuids) for name, label in labels.items()}
    assert results["Saúde"].tests[0]["keywords"][0] == unicodedata.normalize("NFC", "saúde")
    assert results["Autoestima"].tests[0]["keywords"] == ["auto-estima", "autoestima"]
    dropped = {name for name, r in results.items() if r.tests is None and r.reasons}
    assert dropped == {"Sem grupo", "Legado"}
    partial = {name for name, r in results.items() if r.tests and r.reasons}
    assert partial == {"Grupo antigo"}
    assert {name for name, r in results.items() if r.tests is None and not r.reasons} == {
        "Denúncia",
        "Apagado",
    }
    used = {test["type"] for r in results.values() for test in r.tests or ()}
    assert used == {"keywords", "word_count", "groups", "field"}


def test_contacts_are_read_without_name_or_urns(db, manifest):
    for text in (source.CONTACTS_SQL, source.OUTGOING_SQL):
        assert "name" not in text.lower() and "urn" not in text.lower()
    contact = next(db.contacts())
    assert not hasattr(contact, "name") and not hasattr(contact, "urns")
    assert "name" not in Contact.__slots__ and "urn" not in Outgoing.__slots__
    contacts = {c.id: c for c in db.contacts()}
    assert contacts[manifest.special["double_space_contact"]].fields["cidade"] == "Rio  de  Janeiro"
    assert contacts[manifest.special["contact_without_fields"]].fields == {}
    assert any(None in c.fields.values() for c in contacts.values())
    assert all(c.group_ids == tuple(sorted(c.group_ids)) for c in contacts.values())
    assert sum(c.is_blocked for c in contacts.values()) >= 1
    assert sum(c.is_stub for c in contacts.values()) == 1


def test_a_user_who_may_not_read_names_and_urns_can_still_import(url, manifest):
    """PostgreSQL itself proves it: a role without SELECT on those columns reads everything."""
    role = f"casepro_reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        columns = {
            table: [
                name
                for (name,) in admin.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                    (table,),
                )
                if name not in ("name", "urns", "urn")
            ]
            for table in ("contacts_contact", "msgs_outgoing")
        }
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(role)
            )
        )
        try:
            admin.execute(
                sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                    sql.Identifier(role)
                )
            )
            for table, allowed in columns.items():
                admin.execute(
                    sql.SQL("REVOKE SELECT ON {} FROM {}").format(
                        sql.Identifier(table), sql.Identifier(role)
                    )
                )
                admin.execute(
                    sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                        sql.SQL(", ").join(map(sql.Identifier, allowed)),
                        sql.Identifier(table),
                        sql.Identifier(role),
                    )
                )
            parts = urlsplit(url)
            host = parts.netloc.rpartition("@")[2]
            as_role = urlunsplit(parts._replace(netloc=f"{role}:{role}@{host}"))
            with CaseproDatabase(as_role, manifest.subdomain) as db:
                assert len(list(db.contacts())) == manifest.counts["contacts"]
                assert len(list(db.outgoing())) == manifest.counts["outgoing"]
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.connection.execute("SELECT name FROM contacts_contact LIMIT 1")
        finally:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_messages_replies_cases_and_actions(db, manifest):
    messages = list(db.messages())
    assert Counter(m.type for m in messages) == manifest.message_types
    assert {"I", "F"} <= set(manifest.message_types)
    for flag in ("is_flagged", "is_archived"):
        assert any(getattr(m, flag) for m in messages), flag
    assert any(not m.is_active for m in messages) and not messages[4].is_handled
    assert manifest.labels["Apagado"] in messages[9].label_ids
    assert all(m.created_on.utcoffset().total_seconds() == 0 for m in messages)
    cases = {case.id: case for case in db.cases()}
    assert {m.case_id for m in messages} - {None} <= set(cases)
    assert cases[manifest.special["case_without_message"]].initial_message_id is None
    assert (
        manifest.labels["Apagado"] in cases[manifest.special["case_with_deleted_label"]].label_ids
    )
    assert (
        cases[manifest.special["case_of_inactive_partner"]].assignee_id
        == (manifest.partners["antigo"])
    )
    assert any(c.closed_on is None for c in cases.values())
    assert all(c.watcher_ids for c in cases.values())
    actions = list(db.actions())
    assert Counter(a.action for a in actions) == manifest.action_codes
    assert set(manifest.action_codes) == set("OSNALUCR")
    assert {a.case_id for a in actions if a.action == "R"} == manifest.reopened
    assert all(a.note for a in actions if a.action == "N")
    outgoing = list(db.outgoing())
    assert Counter(o.activity for o in outgoing) == manifest.activities
    assert set(manifest.activities) == {"B", "C", "F"}
    assert all(o.contact_id is None for o in outgoing if o.activity == "F")
    assert all(o.case_id in cases for o in outgoing if o.activity == "C")


@pytest.mark.parametrize("kind", STREAMS)
def test_a_stream_resumes_after_an_id_in_small_batches(url, manifest, kind):
    with CaseproDatabase(url, manifest.subdomain, batch=7) as db:
        everything = list(getattr(db, kind)())
        ids = [row.id for row in everything]
        assert ids == sorted(ids) and len(ids) == manifest.counts[kind]
        middle = len(everything) // 2
        rest = list(getattr(db, kind)(after_id=everything[middle].id))
        assert rest == everything[middle + 1 :]
        assert list(getattr(db, kind)(after_id=ids[-1])) == []


def test_streams_can_be_read_side_by_side(db, manifest):
    cases, messages = db.cases(), db.messages()
    pairs = list(zip(cases, messages, strict=False))
    assert len(pairs) == manifest.counts["cases"]
    assert len(list(messages)) == manifest.counts["messages"] - len(pairs)


def test_the_connection_cannot_write(db):
    conn = db.connection
    assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "on"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("UPDATE msgs_message SET text = 'x'")
    conn.rollback()
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM auth_user")
    conn.rollback()
    conn.autocommit = True  # even outside the reader's transaction: the session's default
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO contacts_field (org_id, key, label, value_type, is_active, "
                     "is_visible) VALUES (1, 'x', 'x', 'T', true, true)")  # fmt: skip


def test_everything_is_read_in_one_snapshot(db, url, manifest):
    before = db.fields()
    with psycopg.connect(url, autocommit=True) as writer:
        writer.execute(
            "INSERT INTO contacts_field (org_id, key, label, value_type, is_active, is_visible) "
            "VALUES (%s, 'snapshot_probe', 'Probe', 'T', true, true)",
            (manifest.org_id,),
        )
        try:
            assert db.fields() == before
            with CaseproDatabase(url, manifest.subdomain) as later:
                assert len(later.fields()) == len(before) + 1
        finally:
            writer.execute("DELETE FROM contacts_field WHERE key = 'snapshot_probe'")


def test_the_tickets_migrate_files_give_the_same_cases(db, url, manifest, tmp_path):
    cases_path, agents_path = write_migrate_files(url, manifest.org_id, tmp_path)
    assert cases_path.name == "Linha_Jovem_Rio_cases.json"
    assert b"\\u" in cases_path.read_bytes() and b"\r\n" in agents_path.read_bytes()
    export = MigrateExport(cases_path, agents_path)
    assert export.org.name == "Linha Jovem Rio"
    counts = export.counts()
    assert counts["cases"] == manifest.counts["cases"] and counts["messages"] == 0

    partners = {p.id: p.name for p in db.partners()}
    users = {u.id: u.email for u in db.users()}
    labels = {label.id: label.name for label in db.labels()}
    contacts = {c.id: c.uuid for c in db.contacts()}
    f_partners = {p.id: p.name for p in export.partners()}
    f_users = {u.id: u for u in export.users()}
    f_labels = {label.id: label.name for label in export.labels()}
    f_contacts = {c.id: c.uuid for c in export.contacts()}
    for ours, theirs in zip(db.cases(), export.cases(), strict=True):
        assert (theirs.id, theirs.summary) == (ours.id, ours.summary)
        assert (theirs.opened_on, theirs.closed_on) == (ours.opened_on, ours.closed_on)
        assert f_contacts[theirs.contact_id] == contacts[ours.contact_id]
        assert f_partners[theirs.assignee_id] == partners[ours.assignee_id]
        if ours.user_assignee_id is None:
            assert theirs.user_assignee_id is None
        else:
            assert f_users[theirs.user_assignee_id].email == users[ours.user_assignee_id]
        assert {f_labels[i] for i in theirs.label_ids} == {labels[i] for i in ours.label_ids}

    by_email = {u.email: u for u in f_users.values()}
    assert {u.role for u in f_users.values()} == {"agent"}
    assert "lara@linhajovem.org.br" in by_email  # in the file: partner users, role or not
    assert not by_email["julia@linhajovem.org.br"].is_active  # assigned, but her partner is gone
    notes = " ".join(export.notes())
    assert "managers from data analysts" in notes and "no email" in notes


def test_contact_fields_read_the_same_where_hstore_is_missing():
    """Where the server has no hstore, the test database stores contacts' fields as jsonb; the
    reader's ``fields::jsonb`` reads either."""
    name = f"casepro_{uuid.uuid4().hex[:10]}"
    url = create_database(TEST_DATABASE_URL, name)
    try:
        manifest = load(url, Size(messages=40, cases=4), hstore=False)
        assert not manifest.hstore
        with CaseproDatabase(url, manifest.subdomain) as db:
            contacts = {c.id: c for c in db.contacts()}
        assert contacts[manifest.special["double_space_contact"]].fields["cidade"] == (
            "Rio  de  Janeiro"
        )
        assert contacts[manifest.special["contact_without_fields"]].fields == {}
        assert len(contacts) == manifest.counts["contacts"]
    finally:
        drop_database(TEST_DATABASE_URL, name)

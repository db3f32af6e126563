"""Importing an org's configuration from a CasePro database that this module builds (our DDL,
tests/casepro/schema.sql, filled by tests/casepro/fixture.py), checked through the partner API
as the org's imported administrator sees it. U-Partners' own side runs on the embedded default
(SQLite): the import is the same code either way, and this keeps the module quick."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from services import cli
from services.cases.app import create_app
from services.cases.casepro.source import CaseproDatabase
from services.cases.domain import Conflict
from services.cases.handlers import importing, people
from services.cases.models import Case, Label, Outbox, User
from tests.casepro.tickets_migrate import write_migrate_files

pytestmark = pytest.mark.integration

ORG = "linha"


def run(store, casepro, **options):
    url, manifest = casepro
    with CaseproDatabase(url, manifest.subdomain) as source:
        return importing.import_casepro(store, source, ORG, **options)


def api(settings, store, email="ana@linhajovem.org.br"):
    """The partner API as an imported user (a token made for them here)."""
    with store.db.session() as session, session.begin():
        user = session.scalar(select(User).where(User.org == ORG, User.email == email))
        token = people.new_token(session, user.id, "test").token
    client = create_app(settings, store).test_client()

    def get(path):
        response = client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.json
        return response.json

    return get


def test_a_dry_run_reports_what_it_would_import_and_writes_nothing(store, casepro):
    report = run(store, casepro, dry_run=True)
    assert {kind: n["created"] for kind, n in report.counts.items()} == {
        "org": 1,
        "labels": 19,
        "partners": 3,
        "users": 9,
        "answers": 5,
    }
    assert any("Dry run" in line for line in report.lines())
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 0
        assert session.scalar(select(func.count()).select_from(Outbox)) == 0


def test_the_configuration_arrives_as_casepro_had_it(settings, store, casepro):
    url, manifest = casepro
    with CaseproDatabase(url, manifest.subdomain) as source:
        uuids = {group.name: group.uuid for group in source.groups()}
    report = run(store, casepro)
    get = api(settings, store)

    org = get("/org")
    assert org["name"] == "Linha Jovem Rio"
    assert org["timezone"] == "America/Sao_Paulo"
    assert [g["uuid"] for g in org["suspend_groups"]] == [uuids["Em atendimento"]]
    assert org["display_field"] == "cidade"  # the first visible field; idade is reported
    assert org["followup_flow"]["uuid"] == manifest.special["follow_up_flow_uuid"]
    assert ("org", "contact field idade") in {(k, w) for k, w, _ in report.skipped}

    labels = {label["name"]: label for label in get("/labels")["items"]}
    assert len(labels) == 19 and "Apagado" not in labels  # deleted in CasePro
    assert labels["Saúde"]["rule"] == [
        {"type": "keywords", "quantifier": "any", "keywords": ["saúde", "médico", "hospital"]}
    ]
    assert "covid-19" in labels["Covid"]["rule_description"]  # hyphens, as CasePro took them
    assert "pré-natal" in labels["Pré-natal"]["rule_description"]
    assert labels["Denúncia"]["rule"] == []  # it had no rule: the flows applied it
    assert labels["Legado"]["rule"] == []  # "s.o.s" is not a keyword: the rule was dropped
    assert labels["Jovens"]["rule"] == [
        {"type": "groups", "quantifier": "any", "groups": [uuids["Jovens"]]}
    ]
    assert labels["Ansiedade escolar"]["synced"] is False
    reasons = {(kind, what) for kind, what, _ in report.skipped}
    assert ("label rules", "Legado") in reasons and ("labels", "Apagado") in reasons

    partners = {p["name"]: p for p in get("/partners")["items"]}
    assert set(partners) == {"Centro de Saúde Norte", "ONG Acolher", "Defensoria Pública"}
    acolher = partners["ONG Acolher"]
    assert acolher["restricted"] is True
    assert {ref["name"] for ref in acolher["labels"]} == {"Violência", "Autoestima"}

    users = {u["email"]: u for u in get("/users")["items"]}
    domain = "@linhajovem.org.br"
    assert {email.split("@")[0]: u["role"] for email, u in users.items()} == {
        "ana": "administrator",
        "bruno": "administrator",  # in two role tables: CasePro's order
        "carla": "manager",
        "diego": "manager",
        "elisa": "agent",
        "fabio": "agent",
        "gabi": "agent",
        "hugo": "agent",
        "kleber": "agent",
    }
    assert users[f"hugo{domain}"]["active"] is False
    assert users[f"kleber{domain}"]["name"] == "Kleber Dias"
    assert users[f"carla{domain}"]["partner"]["name"] == "Centro de Saúde Norte"
    skipped_users = {what: why for kind, what, why in report.skipped if kind == "users"}
    assert any("no email" in why for why in skipped_users.values())  # ivo
    assert any(what.startswith("julia") for what in skipped_users)  # her partner was deleted
    with store.db.session() as session:
        assert session.scalar(select(func.count()).where(User.password_hash.is_not(None))) == 0

    answers = {a["question"]: a for a in get("/answers")["items"]}
    assert len(answers) == 5
    health = answers["Onde encontro um posto de saúde?"]
    assert health["language"] == "pt"
    assert sorted(t["language"] for t in health["translations"]) == ["en", "es"]
    assert {ref["name"] for ref in health["labels"]} == {"Saúde", "Pré-natal"}

    # Every service hears of it: one label.created per label, org.updated for the settings.
    with store.db.session() as session:
        names = session.scalars(select(Outbox.name)).all()
    assert names.count("label.created") == 19 and "org.updated" in names


def test_a_second_run_changes_nothing_and_an_interrupted_one_resumes(store, casepro, monkeypatch):
    made = 0
    real = importing.create_user

    def crashing(*args, **kwargs):
        nonlocal made
        if made == 4:
            raise KeyboardInterrupt  # the operator's ^C, half way through the users
        made += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(importing, "create_user", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(store, casepro)
    monkeypatch.undo()
    resumed = run(store, casepro)
    assert resumed.counts["users"]["created"] == 5 and resumed.counts["users"]["existing"] == 4
    assert resumed.counts["labels"]["created"] == 0
    again = run(store, casepro)
    assert all(n["created"] == 0 for n in again.counts.values()), again.counts
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 9
        assert session.scalar(select(func.count()).select_from(Label)) == 19


def test_an_org_with_other_data_is_refused_unless_merging(settings, store, casepro):
    from services.cases import handlers

    handlers.bootstrap_org(store, org=ORG, name="Already here", admin_email="boss@example.org")
    with pytest.raises(Conflict) as refused:
        run(store, casepro)
    assert refused.value.code == "ORG_HAS_DATA"
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 0
    merged = run(store, casepro, merge=True)
    assert merged.counts["labels"]["created"] == 19
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 10  # boss kept


def test_the_command(settings, casepro, monkeypatch, capsys):
    url, manifest = casepro
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UPARTNERS_NAMESPACE", settings.namespace)
    argv = ["import", "casepro", "--database-url", url, "--org", str(manifest.org_id)]
    assert cli.main([*argv, "--into", ORG, "--dry-run"]) == 0  # the history too, counted
    out = capsys.readouterr().out
    assert "Dry run" in out and "messages   would create 1000" in out
    assert cli.main([*argv, "--into", ORG, "--config-only"]) == 0
    out = capsys.readouterr().out
    assert "labels" in out and "created 19" in out and "Skipped:" in out
    assert cli.main([*argv, "--into", ORG, "--config-only"]) == 0
    assert "created 0, already there 19" in capsys.readouterr().out
    assert cli.main([*argv[:-1], "999999", "--into", ORG, "--config-only"]) == 1
    assert "import refused" in capsys.readouterr().err


def test_the_tickets_migrate_files(settings, store, casepro, tmp_path, monkeypatch, capsys):
    """Without database access: CasePro's two export files bring partners, their users (as
    agents: the files do not tell managers apart) and every case, open or closed."""
    url, manifest = casepro
    cases_file, agents_file = write_migrate_files(url, manifest.org_id, tmp_path)
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("UPARTNERS_NAMESPACE", settings.namespace)
    argv = ["import", "casepro", "--cases-file", str(cases_file)]
    argv += ["--agents-file", str(agents_file), "--into", ORG]
    assert cli.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "agent" in out  # the report's notes say what the files cannot tell
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 50
        roles = set(session.scalars(select(User.role).where(User.partner_id.is_not(None))))
        open_cases = session.scalar(
            select(func.count()).select_from(Case).where(Case.closed_on.is_(None))
        )
    assert roles == {"agent"}
    assert open_cases == sum(1 for c in json.loads(cases_file.read_text()) if not c["closed_on"])
    assert cli.main(argv) == 0  # and again: nothing changes
    with store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 50

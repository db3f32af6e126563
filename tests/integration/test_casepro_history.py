"""Importing an org's history from a CasePro database that this module builds (tests/casepro/),
into the embedded default (SQLite), checked through the partner API as the org's imported
administrator sees it: messages, cases and their timelines with the original people and times,
replies, statistics; that no contact's name or URN crosses; that a second run changes nothing
and an interrupted one resumes; that nothing is announced to the other services."""

from __future__ import annotations

import json
import re
from datetime import datetime

import psycopg
import pytest
from sqlalchemy import func, select

from services.cases.app import create_app
from services.cases.casepro.source import CaseproDatabase
from services.cases.handlers import import_history, importing, people
from services.cases.models import (
    MIGRATIONS,
    Case,
    CaseAction,
    CaseLabel,
    CaseWatcher,
    Contact,
    ImportLink,
    Message,
    MessageLabel,
    Outbox,
    Outgoing,
    Partner,
    User,
    open_store,
)
from tests.casepro import templates as t
from tests.casepro.database import plain_url

pytestmark = pytest.mark.integration

ORG = "linha"
TABLES = (Contact, Message, MessageLabel, Outgoing, Case, CaseLabel, CaseWatcher, CaseAction)
TABLES += (User, Partner)


@pytest.fixture(scope="module")
def truth(casepro):
    """What CasePro holds, read here with plain SQL (names and URNs too: to look for them)."""
    url, manifest = casepro
    org = manifest.org_id
    with psycopg.connect(plain_url(url)) as conn:

        def rows(sql):
            return conn.execute(sql, {"org": org}).fetchall()

        def count(table, condition):
            return rows(f"SELECT count(*) FROM {table} WHERE org_id=%(org)s AND {condition}")[0][0]

        return {
            "names": {n for (n,) in rows("SELECT name FROM contacts_contact WHERE org_id=%(org)s")
                      if n},
            "urns": {u for (urns,) in rows("SELECT urns FROM contacts_contact WHERE org_id=%(org)s")
                     for u in urns or []},
            "messages": count("msgs_message", "is_active"),
            "open": count("cases_case", "closed_on IS NULL"),
            "closed": count("cases_case", "closed_on IS NOT NULL"),
            "replies": count("msgs_outgoing", "activity <> 'F'"),
            "actions": count("cases_caseaction", "true"),
        }  # fmt: skip


def run(store, casepro, **options):
    url, manifest = casepro
    with CaseproDatabase(url, manifest.subdomain) as source:
        return importing.import_casepro(store, source, ORG, history=True, **options)


def row_counts(store):
    with store.db.session() as session:
        return {m.__name__: session.scalar(select(func.count()).select_from(m)) for m in TABLES}


def test_a_dry_run_counts_the_history_and_writes_nothing(store, casepro):
    report = run(store, casepro, dry_run=True)
    _, manifest = casepro
    assert report.counts["messages"]["created"] == manifest.counts["messages"]
    assert report.counts["actions"]["created"] == manifest.counts["actions"]
    assert all(n == 0 for n in row_counts(store).values())


def api(settings, store, seen, email="ana@linhajovem.org.br"):
    """The partner API as the imported administrator; every answer is kept in ``seen``."""
    with store.db.session() as session, session.begin():
        user = session.scalar(select(User).where(User.org == ORG, User.email == email))
        token = people.new_token(session, user.id, "test").token
    client = create_app(settings, store).test_client()

    def get(path):
        response = client.get(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.json
        seen.append(json.dumps(response.json, ensure_ascii=False))
        return response.json

    def every(path):
        items, cursor = [], None
        while True:
            glue = "&" if "?" in path else "?"
            page = get(f"{path}{glue}limit=200" + (f"&cursor={cursor}" if cursor else ""))
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    return get, every


def case_id(manifest, casepro_id):
    return import_history.derived_id(f"casepro:{manifest.org_id}", "case", casepro_id)


def names_by_casepro_id(manifest):
    names = {u.key: u.full_name or " ".join(t.NO_PROFILE_NAME) for u in t.USERS}
    return {manifest.users[key]: name for key, name in names.items()}


def test_the_history_arrives_with_its_people_and_times(settings, store, casepro, truth):
    url, manifest = casepro
    lines = []
    report = run(store, casepro, progress=lines.append)
    assert report.counts["messages"]["created"] == truth["messages"]
    assert report.reasons[("messages", "deleted in CasePro")] == (
        manifest.counts["messages"] - truth["messages"]
    )
    assert report.reasons[("outgoing", "a forward to a URN: no contact here")] == 2
    assert report.counts["outgoing"]["created"] == truth["replies"]
    assert report.counts["actions"]["created"] == truth["actions"]
    assert any(line.startswith("messages:") for line in lines)
    seen: list[str] = []
    get, every = api(settings, store, seen)

    # Messages: each folder as CasePro had them; the counts as the list.
    counts = get("/messages/counts")["folders"]
    folders = {f: every(f"/messages?folder={f}") for f in ("inbox", "unlabelled", "archived")}
    assert sum(len(items) for items in folders.values()) == truth["messages"], counts
    assert all(counts[f] == len(items) for f, items in folders.items()), counts
    assert len(every("/messages?folder=flagged")) == counts["flagged"] > 0

    # Cases, open and closed.
    assert len(every("/cases?state=open")) == truth["open"]
    assert len(every("/cases?state=closed")) == truth["closed"]

    # Timelines: CasePro's actions in order, by whom, when; the replies, sent.
    names = names_by_casepro_id(manifest)
    kinds = import_history.ACTION_KINDS
    with psycopg.connect(plain_url(url)) as conn:
        picked = [
            conn.execute(
                "SELECT min(case_id) FROM cases_caseaction WHERE org_id = %s AND action = %s",
                (manifest.org_id, code),
            ).fetchone()[0]
            for code in "SNALUR"
        ]
        seen_kinds = set()
        for casepro_case in picked:
            actions = conn.execute(
                "SELECT action, created_by_id, created_on, note FROM cases_caseaction "
                "WHERE case_id = %s ORDER BY created_on, id",
                (casepro_case,),
            ).fetchall()
            replies = conn.execute(
                "SELECT count(*) FROM msgs_outgoing WHERE case_id = %s", (casepro_case,)
            ).fetchone()[0]
            timeline = get(f"/cases/{case_id(manifest, casepro_case)}/timeline?limit=200")
            got = [
                (e["action"], e["by"]["name"], datetime.fromisoformat(e["at"]), e["note"])
                for e in timeline["items"]
                if e["type"] == "action"
            ]
            assert got == [
                (kinds[code], names[by], at, None if code == "S" else note)
                for code, by, at, note in actions
            ]
            seen_kinds |= {kind for kind, *_ in got}
            sent = [e for e in timeline["items"] if e["type"] == "outgoing"]
            assert len(sent) == replies and all(e["delivery"] == "sent" for e in sent)
    assert seen_kinds == set(kinds.values())

    # A reopened case, and the case opened without a message.
    reopened = get(f"/cases/{case_id(manifest, min(manifest.reopened))}")
    assert reopened["reopened_on"] is not None
    timeline = get(f"/cases/{case_id(manifest, min(manifest.reopened))}/timeline")["items"]
    assert [e["action"] for e in timeline if e.get("action") in ("close", "reopen")][:2] == [
        "close",
        "reopen",
    ]
    alone = get(f"/cases/{case_id(manifest, manifest.special['case_without_message'])}")
    assert alone["initial_message"] is None
    with store.db.session() as session:
        case = session.get(Case, case_id(manifest, min(manifest.reopened)))
        assert case.close_count >= 1 and case.opened_by is not None

    # Replies: in the sent folder, and counted by the statistics.
    assert len(every("/messages?folder=sent")) == truth["replies"]
    stats = get("/stats/org?from=2023-02-01&to=2024-01-31&period=month")
    totals = {total["metric"]: total["count"] for total in stats["totals"]}
    assert totals["replies"] == truth["replies"]
    assert totals["incoming"] == truth["messages"]
    assert totals["opened"] == truth["open"] + truth["closed"]

    # No contact's name or URN crossed.
    answers = "\n".join(seen)
    assert len(answers) > 100_000
    for secret in truth["names"] | truth["urns"]:
        assert secret not in answers
        assert secret.split(":")[-1] not in answers
    assert not re.search(r"tel:\+55", answers)

    # Nothing was announced about messages, cases or replies.
    with store.db.session() as session:
        names = set(session.scalars(select(Outbox.name)))
    assert not {n for n in names if n.startswith(("case.", "outgoing.", "message."))}, names


def test_a_second_run_changes_nothing(store, casepro):
    run(store, casepro)
    first = row_counts(store)
    again = run(store, casepro)
    assert row_counts(store) == first
    assert all(again.counts[kind]["created"] == 0 for kind in import_history.KINDS)


def test_an_interrupted_run_resumes(settings, store, casepro, truth, monkeypatch):
    monkeypatch.setattr(import_history, "BATCH", 100)
    real, batches = import_history.History._messages, []

    def crashing(self, session, batch):
        if batches:
            raise KeyboardInterrupt  # ^C during the second batch of messages
        batches.append(len(batch))
        return real(self, session, batch)

    monkeypatch.setattr(import_history.History, "_messages", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(store, casepro)
    with store.db.session() as session:
        first_batch = session.scalar(select(func.count()).select_from(Message))
        assert 90 <= first_batch <= 100  # the first 100 but the deleted ones
        cursor = session.get(
            ImportLink, (ORG, f"casepro:{casepro[1].org_id}", "cursor", "messages")
        )
        assert cursor is not None
    monkeypatch.setattr(import_history.History, "_messages", real)
    resumed = run(store, casepro)
    assert resumed.counts["messages"]["created"] == truth["messages"] - first_batch
    assert resumed.counts["contacts"]["created"] == 0  # all made in the first run
    interrupted = row_counts(store)

    # The same as an uninterrupted import into a fresh org.
    other = open_store(settings.with_(data_dir=settings.data_dir / "uninterrupted"))
    try:
        other.db.migrate(MIGRATIONS)
        run(other, casepro)
        assert row_counts(other) == interrupted
    finally:
        other.db.dispose()

"""Benchmark of the cases partner API on PostgreSQL: inbox pages and case timelines.

Seeds one org with 10 partners (half restricted to two labels each), 100,000 messages and
10,000 cases (with their messages, replies and actions) by bulk inserts, then times requests
through the Flask app (test client, so the numbers are the app and the database, not a web
server): the first page of 50 of each partner's inbox, following pages by cursor, a label
filter, a text search, the folder counts, and case timelines. Prints p50/p99 per scenario.
Target: p99 under 50 ms for inbox pages and timelines.

    .venv/bin/python bench/cases.py [--messages 100000] [--cases 10000] [--requests 300]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert, text  # noqa: E402

from services.cases import handlers  # noqa: E402
from services.cases.app import create_app  # noqa: E402
from services.cases.domain import ADMINISTRATOR, Actor, pseudonym  # noqa: E402
from services.cases.models import (  # noqa: E402
    MIGRATIONS,
    Case,
    CaseAction,
    CaseLabel,
    Contact,
    Message,
    MessageLabel,
    Org,
    Outgoing,
    open_store,
)
from shared.db import new_id  # noqa: E402
from shared.settings import Settings  # noqa: E402

DATABASE_URL = os.environ.get(
    "UPARTNERS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ORG = "bench"
LABELS = 10
PARTNERS = 10
CHUNK = 5_000
# Each message has a 1 in 100 chance of one of these: about 100 messages of 100,000 each.
RARE = [
    "zanzibar",
    "quilombo",
    "jacarandá",
    "marimba",
    "tucumã",
    "sabiá",
    "ipê",
    "caju",
    "ocapi",
    "xisto",
]
WORDS = [
    "ajuda",
    "escola",
    "medo",
    "casa",
    "violência",
    "saúde",
    "bullying",
    "família",
    "dinheiro",
    "trabalho",
    "comida",
    "preciso",
    "falar",
    "alguém",
    "hoje",
    "ontem",
    "sozinha",
    "triste",
    "polícia",
    "médico",
]
NOW = datetime.now(UTC)


def chunks(rows, size=CHUNK):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def bulk(session, model, rows) -> None:
    for chunk in chunks(rows):
        session.execute(insert(model.__table__), chunk)


def seed(store, admin, messages: int, cases: int, rng: random.Random):
    """People through the service layer, the volume by bulk inserts."""
    labels = [
        handlers.create_label(store, admin, {"name": f"label {i}", "rule": []}).id
        for i in range(LABELS)
    ]
    partners, agents = [], []
    for i in range(PARTNERS):
        restricted = i % 2 == 0
        mine = rng.sample(labels, 2) if restricted else []
        partner = handlers.create_partner(
            store, admin, {"name": f"partner {i}", "restricted": restricted, "labels": mine}
        )
        user = handlers.create_user(
            store,
            admin,
            {
                "name": f"agent {i}",
                "role": "agent",
                "email": f"agent{i}@bench.example",
                "partner": partner.id,
            },
        )
        token = handlers.create_token(store, admin, user.id, "bench")
        partners.append(partner.id)
        agents.append((partner.id, token.token))

    with store.db.session() as session, session.begin():
        salt = session.get(Org, ORG).pseudonym_salt
        contact_count = max(cases * 2, messages // 5)
        contacts = []
        for _ in range(contact_count):
            contact_uuid = str(uuid.uuid4())
            contacts.append(
                {
                    "id": new_id(),
                    "org": ORG,
                    "uuid": contact_uuid,
                    "ref": pseudonym(salt, ORG, contact_uuid, 12),
                    "fields": {},
                    "created_at": NOW,
                }
            )
        bulk(session, Contact, contacts)

        case_rows, case_labels = [], []
        for i in range(cases):
            opened = NOW - timedelta(minutes=rng.randint(60, 90 * 24 * 60))
            closed = i % 3 == 0
            case_rows.append(
                {
                    "id": new_id(),
                    "org": ORG,
                    "contact_id": contacts[i]["id"],
                    "summary": "bench",
                    "partner_id": rng.choice(partners),
                    "user_id": None,
                    "opened_by": admin.user_id,
                    "initial_message_id": None,
                    "opened_on": opened,
                    "closed_on": opened + timedelta(days=1) if closed else None,
                    "close_count": 1 if closed else 0,
                    "case_version": 2 if closed else 1,
                    "reopened_on": None,
                }
            )
            case_labels.append({"case_id": case_rows[-1]["id"], "label_id": rng.choice(labels)})
        bulk(session, Case, case_rows)
        bulk(session, CaseLabel, case_labels)

        message_rows, message_labels, outgoing, actions = [], [], [], []
        in_cases = min(messages // 4, cases * 3)
        for i in range(messages):
            case = case_rows[i % cases] if i < in_cases else None
            received = (
                case["opened_on"] + timedelta(minutes=i // cases)
                if case
                else NOW - timedelta(seconds=rng.randint(0, 90 * 24 * 3600))
            )
            contact = case["contact_id"] if case else rng.choice(contacts[cases:])["id"]
            message_id = new_id()
            message_rows.append(
                {
                    "id": message_id,
                    "org": ORG,
                    "contact_id": contact,
                    "external_id": new_id(),
                    "text": " ".join(rng.choices(WORDS, k=rng.randint(3, 15)))
                    + (f" {rng.choice(RARE)}" if rng.random() < 0.01 else ""),
                    "attachments": [],
                    "flow_uuid": None,
                    "flow_name": None,
                    "node_uuid": None,
                    "received_at": received,
                    "labelled": True,
                    "labeler_labels": [],
                    "labeler_at": received,
                    "flagged": rng.random() < 0.02,
                    "archived": bool(case) or rng.random() < 0.1,
                    "simulation": False,
                    "case_id": case["id"] if case else None,
                    "locked_by": None,
                    "locked_until": None,
                    "created_at": received,
                }
            )
            for label in set(rng.sample(labels, rng.choice((1, 1, 2)))):
                message_labels.append({"message_id": message_id, "label_id": label})
        for case in case_rows:
            at = case["opened_on"]
            actions.append(
                {
                    "id": new_id(),
                    "case_id": case["id"],
                    "kind": "open",
                    "user_id": admin.user_id,
                    "note": "bench",
                    "data": {},
                    "created_at": at,
                }
            )
            for n in range(2):
                outgoing.append(
                    {
                        "id": new_id(),
                        "org": ORG,
                        "contact_id": case["contact_id"],
                        "case_id": case["id"],
                        "reply_to": None,
                        "partner_id": case["partner_id"],
                        "user_id": admin.user_id,
                        "text": "resposta",
                        "delivery": "sent",
                        "failure": None,
                        "sent_on": at,
                        "created_at": at + timedelta(minutes=n + 1),
                    }
                )
                actions.append(
                    {
                        "id": new_id(),
                        "case_id": case["id"],
                        "kind": "note",
                        "user_id": admin.user_id,
                        "note": "nota",
                        "data": {},
                        "created_at": at + timedelta(minutes=n + 2),
                    }
                )
        bulk(session, Message, message_rows)
        bulk(session, MessageLabel, message_labels)
        bulk(session, Outgoing, outgoing)
        bulk(session, CaseAction, actions)
    # Bulk inserts go around the service layer, which keeps the folder counts as messages
    # change: count them once, as an operator would (`upartners cases rebuild-counts`).
    started = time.perf_counter()
    handlers.rebuild_message_counts(store, ORG)
    print(f"folder counts rebuilt from the messages in {time.perf_counter() - started:.2f} s")
    with store.db.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    return labels, agents, case_rows


def timed(client, url, headers, samples):
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    samples.append((time.perf_counter() - started) * 1000)
    assert response.status_code == 200, (url, response.status_code, response.json)
    return response.json


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the seeded schema")
    parser.add_argument(
        "--without-trigrams",
        action="store_true",
        help="drop the text search's trigram index first (the anchor of its figures)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    settings = Settings(database_url=DATABASE_URL, namespace=f"bench{uuid.uuid4().hex[:6]}")
    store = open_store(settings)
    try:
        store.db.migrate(MIGRATIONS)
        if args.without_trigrams:
            with store.db.engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_messages_text_trgm"))
        admin_id, _ = handlers.bootstrap_org(
            store, org=ORG, name="Bench", admin_email="admin@bench.example"
        )
        admin = Actor(ORG, admin_id, "admin", ADMINISTRATOR, None)
        started = time.perf_counter()
        labels, agents, cases = seed(store, admin, args.messages, args.cases, rng)
        print(
            f"seeded {args.messages:,} messages, {args.cases:,} cases, {PARTNERS} partners "
            f"in {time.perf_counter() - started:.1f} s"
        )
        # the pages' session key goes to a folder of this run's own
        app = create_app(settings.with_(data_dir=Path(tempfile.mkdtemp())), store)
        gc.freeze()  # as the web processes do once loaded (shared/gunicorn_hooks.py)
        run(app, agents, labels, cases, args.requests, rng)
        run_pages(app, store, admin, agents, cases, args.requests, rng)
    finally:
        if not args.keep:
            store.db.drop_schema()
        store.db.dispose()


def run(app, agents, labels, cases, requests, rng):
    client = app.test_client()
    scenarios: dict[str, list[float]] = {}

    def sample(name):
        return scenarios.setdefault(name, [])

    for _, token in agents:  # warm up caches and connections
        client.get("/api/v1/messages?limit=50", headers={"Authorization": f"Bearer {token}"})
    for _ in range(requests):
        partner_id, token = rng.choice(agents)
        headers = {"Authorization": f"Bearer {token}"}
        page = timed(client, "/api/v1/messages?limit=50", headers, sample("inbox, first page"))
        for _ in range(3):
            if not page["next_cursor"]:
                break
            page = timed(
                client,
                f"/api/v1/messages?limit=50&cursor={page['next_cursor']}",
                headers,
                sample("inbox, next pages (cursor)"),
            )
        timed(
            client,
            f"/api/v1/messages?limit=50&label={rng.choice(labels)}",
            headers,
            sample("inbox, label filter"),
        )
        timed(
            client, "/api/v1/messages?limit=50&folder=archived", headers, sample("archived folder")
        )
        mine = [c for c in rng.sample(cases, 50) if c["partner_id"] == partner_id]
        for case in mine[:2]:
            timed(
                client,
                f"/api/v1/cases/{case['id']}/timeline?limit=50",
                headers,
                sample("case timeline"),
            )
        timed(client, "/api/v1/cases?limit=50&state=open", headers, sample("case list, open"))
    for _ in range(max(20, requests // 10)):
        _, token = rng.choice(agents)
        headers = {"Authorization": f"Bearer {token}"}
        timed(
            client,
            f"/api/v1/messages?limit=50&q={rng.choice(WORDS)}",
            headers,
            sample("text search, common word"),
        )
        timed(
            client,
            f"/api/v1/messages?limit=50&q={rng.choice(RARE)}",
            headers,
            sample("text search, rare word (~100 messages)"),
        )
        timed(
            client,
            "/api/v1/messages?limit=50&q=zzzrare",
            headers,
            sample("text search, no match"),
        )
        timed(client, "/api/v1/messages/counts", headers, sample("folder and label counts"))

    print(f"{'scenario':<38} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in scenarios.items():
        print(
            f"{name:<38} {len(values):>6} {statistics.median(values):>8.1f} "
            f"{percentile(values, 0.99):>8.1f} {max(values):>8.1f}"
        )


PASSWORD = "a bench password"


def signed_in_client(app, store, admin, token):
    """A browser of the agent holding ``token``: a password set through a one-time link, then
    signed in through the sign-in page (CSRF and all)."""
    from services.cases.handlers import sign_in

    actor = handlers.authenticate(store, token)
    link = sign_in.make_link(store, admin, actor.user_id)  # as their administrator would
    client = app.test_client()
    page = client.get(f"/set-password/{link.token}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post(
        f"/set-password/{link.token}",
        data={"csrf_token": csrf, "password": PASSWORD, "confirm": PASSWORD},
    )
    assert answer.status_code == 302, answer.status_code
    return client


def run_pages(app, store, admin, agents, cases, requests, rng):
    """The web pages' server time (Flask's test client: no network), and what a first load of
    the inbox transfers, compressed as a proxy with gzip would send it."""
    browsers = {partner: signed_in_client(app, store, admin, token) for partner, token in agents}
    scenarios: dict[str, list[float]] = {}

    def page(client, url, name):
        started = time.perf_counter()
        answer = client.get(url)
        scenarios.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code)
        return answer

    for client in browsers.values():  # warm up
        client.get("/inbox")
    for _ in range(requests):
        partner_id, _ = rng.choice(agents)
        client = browsers[partner_id]
        page(client, "/inbox", "page: inbox")
        mine = [c for c in rng.sample(cases, 50) if c["partner_id"] == partner_id]
        for case in mine[:1]:
            page(client, f"/cases/{case['id']}", "page: a case")
            page(client, f"/cases/{case['id']}/entries", "page: a case's live entries")
    print(f"{'page':<38} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in scenarios.items():
        print(
            f"{name:<38} {len(values):>6} {statistics.median(values):>8.1f} "
            f"{percentile(values, 0.99):>8.1f} {max(values):>8.1f}"
        )
    client = next(iter(browsers.values()))
    html = client.get("/inbox").get_data()
    css = client.get("/assets/app.css").get_data()
    js = client.get("/assets/live.js").get_data()
    total = sum(len(gzip.compress(part)) for part in (html, css, js))
    print(
        f"first load of the inbox: {total / 1024:.1f} KB compressed (HTML {len(html) / 1024:.1f} KB"
        f", CSS {len(css) / 1024:.1f} KB, JavaScript {len(js) / 1024:.1f} KB uncompressed)"
    )


if __name__ == "__main__":
    main()

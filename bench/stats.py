"""Benchmark of the statistics on PostgreSQL: a year of one org's history counted by
``rebuild``, then the statistics endpoints and pages read over it.

Seeds one org in a schema of its own (dropped at the end unless ``--keep``): 20 labels, 50
partners (10 restricted to 3 labels each) with 10 users each (a manager and 9 agents), and by
bulk inserts (COPY) one year of history: 1,000,000 messages received over 365 days with 1 or 2
labels each (some labels much more common than others), 100,000 cases opened over the year
(their open, reassign, note and close actions with the ``data`` the service writes: the
assignment and ``self_assigned``, the labels the case inherited), replies by the users of the
partner the case is with at that moment (and some replies outside cases).

Then counts the statistics from that history with ``statistics.rebuild(store, org)`` (as
``upartners cases rebuild-stats`` does) and reports its time and rate, and times requests
through the Flask app (test client: the app and the database, no web server) of every
statistics endpoint and page: the org's (an administrator: the default 30 days, and 365 days by
month), a partner's, a user's, a label's, the top labels, a partner's replies and the agent
activity (a partner's manager; the activity also as the administrator, over all 500 users).
``GET /healthz`` and ``GET /api/v1/me`` through the same client are the anchor to compare
machines by. Prints p50/p99 per scenario. Target: p99 under 100 ms for every statistics
endpoint and page.

    .venv/bin/python bench/stats.py [--messages 1000000] [--cases 100000] [--partners 50]
        [--users 500] [--requests 200] [--keep]
    .venv/bin/python bench/stats.py --reuse <namespace>   # time the requests again on a kept
                                                          # schema, migrated to the newest

Bounded by the seeding and the rebuild: the rebuild counts 3,500 to 4,500 facts/s on 2 cores
(about 3 million facts with the defaults: 11 to 14 minutes, the whole run about 25); with
``--messages 300000 --cases 30000`` the whole run takes about 8 minutes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import select, text  # noqa: E402

from bench.cases import WORDS, percentile, signed_in_client  # noqa: E402
from services.cases import handlers  # noqa: E402
from services.cases.app import create_app  # noqa: E402
from services.cases.domain import ADMINISTRATOR, Actor, pseudonym  # noqa: E402
from services.cases.handlers import stat_reads  # noqa: E402
from services.cases.handlers import statistics as stat_counts  # noqa: E402
from services.cases.models import MIGRATIONS, Org, open_store  # noqa: E402
from shared.db import new_id  # noqa: E402
from shared.settings import Settings  # noqa: E402

DATABASE_URL = os.environ.get(
    "UPARTNERS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ORG = "bench"
TIMEZONE = "America/Sao_Paulo"
LABELS = 20
RESTRICTED_EVERY = 5  # one partner in 5 sees 3 labels only
DAYS = 365
NOW = datetime.now(UTC)
BROWSERS = 5  # partners whose manager signs in to the pages (a password hash each)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def copy(conn, table: str, columns: tuple[str, ...], rows) -> int:
    """COPY rows (tuples in ``columns`` order; JSON as text) into ``table``."""
    count = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(statement) as pipe:
        for row in rows:
            pipe.write_row(row)
            count += 1
    return count


def ref(row: dict | None) -> dict | None:
    return {"id": row["id"], "name": row["name"]} if row else None


# --- seeding -------------------------------------------------------------------------------------
def seed_people(store, admin: Actor, partners: int, users: int, rng: random.Random):
    """Labels, partners and users through the service layer, as an administrator makes them."""
    labels = [
        handlers.create_label(store, admin, {"name": f"label {i}", "rule": []}).id
        for i in range(LABELS)
    ]
    people = []  # one dict per partner: id, name, labels it sees, users, manager token
    per_partner = max(1, users // partners)
    for p in range(partners):
        restricted = p % RESTRICTED_EVERY == 0
        mine = rng.sample(labels, 3) if restricted else []
        partner = handlers.create_partner(
            store, admin, {"name": f"partner {p}", "restricted": restricted, "labels": mine}
        )
        members = []
        for u in range(per_partner):
            user = handlers.create_user(
                store,
                admin,
                {
                    "name": f"user {p}.{u}",
                    "role": "manager" if u == 0 else "agent",
                    "email": f"user{p}.{u}@bench.example",
                    "partner": partner.id,
                },
            )
            members.append({"id": user.id, "name": user.name, "partner": partner.id})
        token = handlers.create_token(store, admin, members[0]["id"], "bench").token
        people.append(
            {
                "id": partner.id,
                "name": partner.name,
                "sees": mine or labels,
                "users": members,
                "manager_token": token,
            }
        )
    return labels, people


def seed_history(store, admin: Actor, args, labels, people, rng: random.Random) -> dict:
    """One year of messages, cases and replies, by COPY in one transaction."""
    weights = [1 / (i + 1) for i in range(len(labels))]  # a few common labels, a long tail

    def some_labels() -> set[str]:
        return set(rng.choices(labels, weights, k=rng.choice((1, 1, 1, 2))))

    def moment_in_year() -> datetime:
        return NOW - timedelta(seconds=rng.randint(60, DAYS * 24 * 3600))

    def later(at: datetime, mean_hours: float) -> datetime:
        return at + timedelta(seconds=rng.expovariate(1 / (mean_hours * 3600)) + 30)

    admin_ref = {"id": admin.user_id, "name": "admin"}
    raw = store.db.engine.raw_connection()
    conn = raw.driver_connection
    counted: dict[str, int] = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pseudonym_salt FROM orgs WHERE key = %s", (ORG,))
            salt = cur.fetchone()[0]
        contact_count = max(args.cases * 2, args.messages // 5)
        contacts = [new_id() for _ in range(contact_count)]

        def contact_rows():
            for contact_id in contacts:
                contact_uuid = str(uuid.uuid4())
                ref_ = pseudonym(salt, ORG, contact_uuid, 12)
                yield (contact_id, ORG, contact_uuid, ref_, "{}", NOW)

        counted["contacts"] = copy(
            conn, "contacts", ("id", "org", "uuid", "ref", "fields", "created_at"), contact_rows()
        )

        # Cases: each one's story (actions and replies) decided here, written below.
        cases, actions, outgoing, case_labels = [], [], [], []
        for i in range(args.cases):
            opened = moment_in_year()
            case_id, first_message = new_id(), new_id()
            team = rng.choice(people)
            user = rng.choice(team["users"]) if rng.random() < 0.5 else None
            who = rng.random()
            if who < 0.5:  # an administrator opens it for the partner
                opener, self_assigned = admin_ref, False
            elif who < 0.9:  # a user of the partner opens it from their inbox
                opener, self_assigned = rng.choice(team["users"]), True
            else:  # a user of another partner sends it there
                opener, self_assigned = rng.choice(rng.choice(people)["users"]), False
            inherited = sorted(some_labels())
            case_labels += [(case_id, label) for label in inherited]
            actions.append(
                (
                    new_id(),
                    case_id,
                    "open",
                    opener["id"],
                    "bench",
                    json.dumps(
                        {
                            "partner": ref(team),
                            "user": ref(user),
                            "self_assigned": self_assigned,
                            "labels": inherited,
                        }
                    ),
                    opened,
                )
            )
            steps = ["reply"] * rng.choice((0, 1, 1, 2, 2, 3, 4)) + ["note"] * rng.choice(
                (0, 0, 1, 2)
            )
            rng.shuffle(steps)
            if rng.random() < 0.15:
                steps.insert(rng.randint(0, len(steps)), "reassign")
                steps.append("reply")
            if rng.random() < 0.7:
                steps.append("close")
            at, closed = opened, None
            for step in steps:
                at = later(at, 6)
                if at >= NOW:
                    break
                actor = user or rng.choice(team["users"])
                if step == "reply":
                    outgoing.append(
                        (
                            new_id(),
                            ORG,
                            contacts[i],
                            case_id,
                            first_message,
                            team["id"],
                            actor["id"],
                            "resposta",
                            "sent",
                            at,
                            at,
                        )
                    )
                elif step == "note":
                    actions.append((new_id(), case_id, "note", actor["id"], "nota", "{}", at))
                elif step == "reassign":
                    by = admin_ref if rng.random() < 0.7 else actor
                    team = rng.choice([p for p in people if p["id"] != team["id"]])
                    user = rng.choice(team["users"]) if rng.random() < 0.5 else None
                    data = {"partner": ref(team), "user": ref(user), "self_assigned": False}
                    actions.append(
                        (new_id(), case_id, "reassign", by["id"], None, json.dumps(data), at)
                    )
                else:
                    actions.append((new_id(), case_id, "close", actor["id"], "fim", "{}", at))
                    closed = at
            cases.append(
                (
                    case_id,
                    ORG,
                    contacts[i],
                    "bench",
                    team["id"],
                    user["id"] if user else None,
                    opener["id"],
                    first_message,
                    opened,
                    closed,
                    1 if closed else 0,
                    "{}",
                    len(steps) + 1,
                )
            )
        counted["cases"] = copy(
            conn,
            "cases",
            (
                "id",
                "org",
                "contact_id",
                "summary",
                "partner_id",
                "user_id",
                "opened_by",
                "initial_message_id",
                "opened_on",
                "closed_on",
                "close_count",
                "stats_clock",
                "case_version",
            ),
            cases,
        )
        counted["case labels"] = copy(conn, "case_labels", ("case_id", "label_id"), case_labels)

        # Messages: a quarter (at most 3 a case) in cases, the rest over the year; some of
        # those answered outside a case.
        message_labels = []
        in_cases = min(args.messages // 4, args.cases * 3) if args.cases else 0
        all_users = [u for p in people for u in p["users"]]

        def message_rows():
            for i in range(args.messages):
                if i < in_cases:
                    case = cases[i % len(cases)]
                    k = i // len(cases)
                    if k == 0:  # the message the case was opened from, and its labels
                        message_id, received = case[7], case[8] - timedelta(minutes=2)
                    else:
                        message_id, received = new_id(), min(later(case[8], 12), NOW)
                    contact_id, case_id = case[2], case[0]
                else:
                    message_id, received = new_id(), moment_in_year()
                    contact_id, case_id = rng.choice(contacts[len(cases) :]), None
                    if rng.random() < 0.05:
                        answerer = rng.choice(all_users)
                        at = min(later(received, 3), NOW)
                        outgoing.append(
                            (
                                new_id(),
                                ORG,
                                contact_id,
                                None,
                                message_id,
                                answerer["partner"],
                                answerer["id"],
                                "resposta",
                                "sent",
                                at,
                                at,
                            )
                        )
                if not (case_id and k == 0):
                    for label in some_labels():
                        message_labels.append((message_id, label))
                yield (
                    message_id,
                    ORG,
                    contact_id,
                    new_id(),
                    " ".join(rng.choices(WORDS, k=rng.randint(3, 15))),
                    "[]",
                    received,
                    True,
                    "[]",
                    received,
                    rng.random() < 0.02,
                    bool(case_id) or rng.random() < 0.6,
                    False,
                    case_id,
                    received,
                )
            written = {case[0]: case[7] for case in cases[:in_cases]}
            for case_id, label in case_labels:  # the first message carries the case's labels
                if case_id in written:
                    message_labels.append((written[case_id], label))

        counted["messages"] = copy(
            conn,
            "messages",
            (
                "id",
                "org",
                "contact_id",
                "external_id",
                "text",
                "attachments",
                "received_at",
                "labelled",
                "labeler_labels",
                "labeler_at",
                "flagged",
                "archived",
                "simulation",
                "case_id",
                "created_at",
            ),
            message_rows(),
        )
        counted["message labels"] = copy(
            conn, "message_labels", ("message_id", "label_id"), message_labels
        )
        counted["replies"] = copy(
            conn,
            "outgoing",
            (
                "id",
                "org",
                "contact_id",
                "case_id",
                "reply_to",
                "partner_id",
                "user_id",
                "text",
                "delivery",
                "sent_on",
                "created_at",
            ),
            outgoing,
        )
        counted["case actions"] = copy(
            conn,
            "case_actions",
            ("id", "case_id", "kind", "user_id", "note", "data", "created_at"),
            actions,
        )
        conn.commit()
    finally:
        raw.close()
    return counted


def people_of(store, admin: Actor) -> tuple[list[str], list[dict]]:
    """A kept schema's labels and partners as seed_people returned them (new manager tokens)."""
    from services.cases.models import Label, Partner, PartnerLabel, User

    with store.db.session() as session:
        labels = list(
            session.scalars(select(Label.id).where(Label.org == ORG).order_by(Label.name))
        )
        people = []
        partners = session.scalars(select(Partner).where(Partner.org == ORG).order_by(Partner.name))
        for partner in partners:
            users = session.scalars(
                select(User).where(User.partner_id == partner.id).order_by(User.role, User.name)
            ).all()
            mine = list(
                session.scalars(
                    select(PartnerLabel.label_id).where(PartnerLabel.partner_id == partner.id)
                )
            )
            manager = next(u for u in users if u.role == "manager")
            people.append(
                {
                    "id": partner.id,
                    "name": partner.name,
                    "sees": (mine if partner.restricted else None) or labels,
                    "users": [{"id": u.id, "name": u.name, "partner": partner.id} for u in users],
                    "manager_id": manager.id,
                }
            )
    for team in people:
        team["manager_token"] = handlers.create_token(
            store, admin, team.pop("manager_id"), "bench"
        ).token
    return labels, people


def vacuum(store) -> None:
    """As autovacuum would have by then: fresh planner statistics and visibility maps."""
    with store.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


# --- timing --------------------------------------------------------------------------------------
class Timings:
    def __init__(self):
        self.samples: dict[str, list[float]] = {}

    def get(self, client, url: str, name: str, headers=None):
        started = time.perf_counter()
        answer = client.get(url, headers=headers)
        self.samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code, answer.get_data()[:300])
        return answer

    def report(self, title: str) -> None:
        print(f"{title:<52} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, values in self.samples.items():
            print(
                f"{name:<52} {len(values):>5} {statistics.median(values):>8.1f} "
                f"{percentile(values, 0.99):>8.1f} {max(values):>8.1f}"
            )


def run(app, store, admin, admin_token, labels, people, requests, rng) -> None:
    client = app.test_client()
    today = stat_reads.day_range(TIMEZONE, None, None)[1]
    year = f"from={today - timedelta(days=DAYS - 1)}&to={today}&period=month"
    timings = Timings()
    as_admin = {"Authorization": f"Bearer {admin_token}"}

    def as_manager(team):
        return {"Authorization": f"Bearer {team['manager_token']}"}

    api = "/api/v1/stats"
    for team in people[:3]:  # warm up connections and caches
        client.get(f"{api}/partners/{team['id']}", headers=as_manager(team))
    client.get(f"{api}/org", headers=as_admin)
    for _ in range(requests):
        team = rng.choice(people)
        mine = as_manager(team)
        timings.get(client, "/healthz", "anchor: GET /healthz")
        timings.get(client, "/api/v1/me", "anchor: GET /api/v1/me", as_admin)
        timings.get(client, f"{api}/org", "org, 30 days by day (admin)", as_admin)
        timings.get(client, f"{api}/org?{year}", "org, 365 days by month (admin)", as_admin)
        timings.get(client, f"{api}/partners/{team['id']}", "partner, 30 days (manager)", mine)
        timings.get(
            client,
            f"{api}/partners/{team['id']}?{year}",
            "partner, 365 days by month (manager)",
            mine,
        )
        user = rng.choice(team["users"])
        timings.get(client, f"{api}/users/{user['id']}", "user, 30 days (manager)", mine)
        label = rng.choice(team["sees"])
        timings.get(client, f"{api}/labels/{label}", "label, 30 days (manager)", mine)
        timings.get(client, f"{api}/labels", "top labels, 30 days (manager)", mine)
        timings.get(
            client, f"{api}/partners/{team['id']}/replies", "partner's replies (manager)", mine
        )
        timings.get(client, f"{api}/activity", "activity, 30 days (manager: 10 users)", mine)
        timings.get(client, f"{api}/activity", "activity, 30 days (admin: all users)", as_admin)
    timings.report("API")

    # The pages: the admin and a few managers signed in through the sign-in pages.
    browsers = {
        team["id"]: signed_in_client(app, store, admin, team["manager_token"])
        for team in people[:BROWSERS]
    }
    admin_browser = signed_in_client(app, store, admin, admin_token)
    teams = people[:BROWSERS]
    pages = Timings()
    for browser in (admin_browser, *browsers.values()):
        browser.get("/stats")  # warm up
    for _ in range(requests):
        team = rng.choice(teams)
        browser = browsers[team["id"]]
        pages.get(admin_browser, "/stats", "page: /stats (admin: the org)")
        pages.get(browser, f"/stats/partners/{team['id']}", "page: a partner (manager)")
        pages.get(browser, f"/stats/labels/{rng.choice(team['sees'])}", "page: a label (manager)")
        user = rng.choice(team["users"])
        pages.get(browser, f"/stats/users/{user['id']}", "page: a user (manager)")
        pages.get(browser, "/stats/activity", "page: activity (manager: 10 users)")
        pages.get(admin_browser, "/stats/activity", "page: activity (admin: all users)")
    pages.report("pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--partners", type=int, default=50)
    parser.add_argument("--users", type=int, default=500, help="spread over the partners")
    parser.add_argument("--requests", type=int, default=200, help="per scenario")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the seeded schema")
    parser.add_argument(
        "--reuse",
        metavar="NAMESPACE",
        help="time the requests again on a schema an earlier --keep run left (no seeding)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rng = random.Random(args.seed)
    settings = Settings(
        database_url=DATABASE_URL, namespace=args.reuse or f"bench{uuid.uuid4().hex[:6]}"
    )
    store = open_store(settings)
    if args.reuse:
        try:
            reuse(settings, store, args, rng)
        finally:
            store.db.dispose()
        return
    try:
        store.db.migrate(MIGRATIONS)
        with store.db.engine.connect() as conn:
            print(f"PostgreSQL {conn.execute(text('SHOW server_version')).scalar()}")
        admin_id, admin_token = handlers.bootstrap_org(
            store, org=ORG, name="Bench", admin_email="admin@bench.example"
        )
        admin = Actor(ORG, admin_id, "admin", ADMINISTRATOR, None)
        with store.db.session() as session, session.begin():
            session.get(Org, ORG).timezone = TIMEZONE
        started = time.perf_counter()
        labels, people = seed_people(store, admin, args.partners, args.users, rng)
        counted = seed_history(store, admin, args, labels, people, rng)
        seeded = time.perf_counter() - started
        print(
            "seeded "
            + ", ".join(f"{n:,} {what}" for what, n in counted.items())
            + f", {len(labels)} labels, {len(people)} partners, "
            f"{sum(len(p['users']) for p in people)} users in {seeded:.1f} s"
        )
        started = time.perf_counter()
        vacuum(store)
        print(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        facts = stat_counts.rebuild(store, ORG)[ORG]
        took = time.perf_counter() - started
        print(f"statistics.rebuild: {facts:,} facts in {took:.1f} s ({facts / took:,.0f} facts/s)")
        started = time.perf_counter()
        vacuum(store)
        with store.db.engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM stat_counts")).scalar()
        print(f"{rows:,} daily count rows; VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")

        # the pages' session key goes to a folder of this run's own
        app = create_app(settings.with_(data_dir=Path(tempfile.mkdtemp())), store)
        gc.freeze()  # as the web processes do once loaded (shared/gunicorn_hooks.py)
        started = time.perf_counter()
        run(app, store, admin, admin_token, labels, people, args.requests, rng)
        print(f"requests timed in {time.perf_counter() - started:.1f} s")
        if args.keep:
            print(f"schema kept: {store.db.schema}")
    finally:
        if not args.keep:
            store.db.drop_schema()
        store.db.dispose()


def reuse(settings: Settings, store, args, rng: random.Random) -> None:
    from services.cases.models import User

    store.db.migrate(MIGRATIONS)  # a kept schema gets the newer indexes
    vacuum(store)
    with store.db.session() as session:
        admin_id = session.scalar(
            select(User.id).where(User.org == ORG, User.role == ADMINISTRATOR)
        )
        facts = session.execute(text("SELECT count(*) FROM stat_facts")).scalar()
    admin = Actor(ORG, admin_id, "admin", ADMINISTRATOR, None)
    admin_token = handlers.create_token(store, admin, admin_id, "bench").token
    labels, people = people_of(store, admin)
    print(f"reusing {settings.namespace}: {facts:,} facts, {len(people)} partners")
    app = create_app(settings.with_(data_dir=Path(tempfile.mkdtemp())), store)
    gc.freeze()  # as the web processes do once loaded (shared/gunicorn_hooks.py)
    started = time.perf_counter()
    run(app, store, admin, admin_token, labels, people, args.requests, rng)
    print(f"requests timed in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()

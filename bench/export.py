"""Benchmark of exports on PostgreSQL: N messages exported as XLSX and as CSV by the worker's
function (services/cases/handlers/exports.py ``build_export``), each in a process of its own so
that its peak memory is its own.

Seeds one org, two labels and a restricted partner, then N messages (default 1,000,000) of
2,000 contacts by bulk inserts, generated and inserted chunk by chunk. Each export is asked
for through the service layer, as an administrator (every message) and as the restricted
partner's agent (half of them, through the visibility conditions), and built with the default
batch size. Prints seconds, rows per second, the file's size and the process's peak memory
(``ru_maxrss``, the interpreter and its imports included), beside an anchor measured in the
same run: the same messages merely read through a server-side cursor. Targets for 1M messages: under
60 s and under 200 MB.

    .venv/bin/python bench/export.py [--messages 1000000] [--keep]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from services.cases import handlers  # noqa: E402
from services.cases.domain import ADMINISTRATOR, Actor, pseudonym  # noqa: E402
from services.cases.handlers import exports  # noqa: E402
from services.cases.handlers.access import actors_of  # noqa: E402
from services.cases.models import (  # noqa: E402
    MIGRATIONS,
    Contact,
    Message,
    MessageLabel,
    Org,
    User,
    open_store,
)
from shared.settings import Settings  # noqa: E402

DATABASE_URL = os.environ.get(
    "UPARTNERS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ORG = "bench"
CONTACTS = 2_000
CHUNK = 10_000
WORDS = ["ajuda", "escola", "medo", "casa", "saúde", "família", "preciso", "falar", "=1+1", "@x"]


def seed(store, admin: Actor, messages: int) -> str:
    """Labels, a restricted partner and its agent through the service layer; the messages by
    bulk inserts. Returns the agent's user id."""
    labels = [
        handlers.create_label(store, admin, {"name": f"label {i}", "rule": []}).id for i in range(2)
    ]
    partner = handlers.create_partner(
        store, admin, {"name": "partner", "restricted": True, "labels": labels[:1]}
    )
    agent = handlers.create_user(
        store,
        admin,
        {"name": "agent", "role": "agent", "email": "agent@bench.example", "partner": partner.id},
    )
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(days=90)
    with store.db.session() as session, session.begin():
        salt = session.get(Org, ORG).pseudonym_salt
        contacts = []
        for _ in range(CONTACTS):
            contact_uuid = str(uuid.uuid4())
            contacts.append(
                {
                    "id": str(uuid.uuid4()),
                    "org": ORG,
                    "uuid": contact_uuid,
                    "ref": pseudonym(salt, ORG, contact_uuid, 12),
                    "fields": {},
                    "created_at": start,
                }
            )
        session.execute(insert(Contact), contacts)
    for first in range(0, messages, CHUNK):
        rows, links = [], []
        for n in range(first, min(first + CHUNK, messages)):
            message_id = str(uuid.uuid4())
            moment = start + timedelta(seconds=n * 7)
            rows.append(
                {
                    "id": message_id,
                    "org": ORG,
                    "contact_id": contacts[n % CONTACTS]["id"],
                    "external_id": None,
                    "text": " ".join(rng.choices(WORDS, k=rng.randint(3, 15))),
                    "attachments": [],
                    "received_at": moment,
                    "labelled": True,
                    "labeler_labels": [],
                    "flagged": n % 50 == 0,
                    "archived": False,
                    "simulation": False,
                    "created_at": moment,
                }
            )
            links.append({"message_id": message_id, "label_id": labels[n % 2]})
        with store.db.session() as session, session.begin():
            session.execute(insert(Message), rows)
            session.execute(insert(MessageLabel), links)
    with store.db.engine.begin() as conn:  # committed: statistics roll back with the rest
        conn.exec_driver_sql("ANALYZE")
    return agent.id


def export_once(settings: Settings, user_id: str, file_format: str) -> dict:
    """In a process of its own: ask for an export of every message the user sees and build it."""
    store = open_store(settings)
    try:
        with store.db.session() as session:
            actor = actors_of(session, [session.get(User, user_id)])[user_id]
        asked = exports.request_export(store, actor, "messages", file_format, {})
        started = time.perf_counter()
        with store.unit_of_work() as uow:
            state = exports.build_export(uow.session, settings, ORG, asked.id)
        seconds = time.perf_counter() - started
        done = exports.get_export(store, actor, asked.id)
        path = settings.exports_path / f"{asked.id}.{file_format}"
        return {
            "state": state,
            "rows": done.progress,
            "seconds": seconds,
            "size": path.stat().st_size if path.exists() else 0,
            "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        }
    finally:
        store.db.dispose()


def raw_read(settings: Settings) -> dict:
    """The anchor, in a process of its own: the same messages' columns streamed from
    PostgreSQL through a server-side cursor and thrown away: what reading alone costs."""
    store = open_store(settings)
    try:
        started = time.perf_counter()
        rows = 0
        with store.db.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=2_000).exec_driver_sql(
                "SELECT id, received_at, contact_id, text, flagged, archived, case_id "
                "FROM messages WHERE org = %(org)s ORDER BY received_at, id",
                {"org": ORG},
            )
            for _ in result:
                rows += 1
        return {"rows": rows, "seconds": time.perf_counter() - started}
    finally:
        store.db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the seeded schema")
    args = parser.parse_args()
    settings = Settings(
        database_url=DATABASE_URL,
        namespace=f"bench{uuid.uuid4().hex[:6]}",
        data_dir=Path(tempfile.mkdtemp()),
    )
    store = open_store(settings)
    try:
        store.db.migrate(MIGRATIONS)
        admin_id, _ = handlers.bootstrap_org(
            store, org=ORG, name="Bench", admin_email="admin@bench.example"
        )
        admin = Actor(ORG, admin_id, "admin", ADMINISTRATOR, None)
        started = time.perf_counter()
        agent_id = seed(store, admin, args.messages)
        print(f"seeded {args.messages:,} messages in {time.perf_counter() - started:.1f} s")
        spawn = multiprocessing.get_context("spawn")
        with spawn.Pool(1) as pool:
            anchor = pool.apply(raw_read, (settings,))
        print(
            f"{'anchor: raw read':>21}: {anchor['rows']:>9,} rows in {anchor['seconds']:6.1f} s "
            f"({anchor['rows'] / anchor['seconds']:,.0f}/s)"
        )
        for who, user_id in (("administrator", admin_id), ("restricted agent", agent_id)):
            for file_format in ("xlsx", "csv"):
                with spawn.Pool(1) as pool:
                    result = pool.apply(export_once, (settings, user_id, file_format))
                print(
                    f"{who:>16} {file_format:4}: {result['rows']:>9,} rows in "
                    f"{result['seconds']:6.1f} s ({result['rows'] / result['seconds']:,.0f}/s), "
                    f"{result['size'] / 2**20:6.1f} MiB file, peak RSS {result['rss']:6.1f} MiB "
                    f"({result['state']})"
                )
    finally:
        if not args.keep:
            store.db.drop_schema()
        store.db.dispose()


if __name__ == "__main__":
    main()

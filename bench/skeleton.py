"""The pipeline's skeleton: the least a product of this architecture does for each message, the
anchor of bench/pipeline.py's CPU per message.

The product's path, with the product taken out: a webhook is committed with its event in one
statement before the answer (outbox); a relay claims committed events and publishes them with
publisher confirms to quorum queues, marking them sent in the claim's transaction; a
"labeler" consumes each event in batches and commits what it read (an inbox row per event, so
that a redelivery changes nothing), a state row and its own event in one transaction before it
acknowledges, and its relay publishes that event; a "cases" consumer takes both events and
keeps one row per message, also behind an inbox. Same gunicorn settings, same quorum queues,
same batch size and batch wait, same relay (``ConfirmingPublisher``), the same durability.

Not in it: parsing the webhook beyond ``json.loads``, credentials, schemas, labels, SQLAlchemy,
kombu, folder counts, statistics, contacts, cases. Its CPU per message beside the product's, in
the same run, says how much of the product's cost is the architecture itself (HTTP, commits,
the broker, wake-ups) on this machine, and how much the product's own work.

Processes (each started by ``run``): ``gunicorn 'bench.skeleton:create_app()'``,
``python -m bench.skeleton relay web|labeler``, ``python -m bench.skeleton consume
labeler|cases``. They read ``UPARTNERS_DATABASE_URL``, ``UPARTNERS_BROKER_URL`` and
``UPARTNERS_NAMESPACE``; the tables live in the schema ``<namespace>_skeleton``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from flask import Flask, jsonify, request

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python -m bench.skeleton` from the repository
    sys.path.insert(0, str(REPO))

from shared.bus import topology  # noqa: E402
from shared.bus.publisher import ConfirmingPublisher  # noqa: E402
from shared.settings import Settings  # noqa: E402

SCHEMA_SUFFIX = "_skeleton"
RECEIVED, LABELED = "skeleton.received", "skeleton.labeled"
# The queues and the routing keys they bind (exact keys: the product's queues bind none of these).
QUEUES = {"labeler": (RECEIVED,), "cases": (RECEIVED, LABELED)}
OUTBOX_OF = {"web": ("web_outbox", RECEIVED), "labeler": ("labeler_outbox", LABELED)}
# The processes besides the web endpoint: (role, name) of `python -m bench.skeleton ROLE NAME`.
PROCESSES = (("relay", "web"), ("relay", "labeler"), ("consume", "labeler"), ("consume", "cases"))

TABLES = """
CREATE TABLE web_messages (id uuid PRIMARY KEY, body bytea NOT NULL);
CREATE TABLE labeler_inbox (event_id uuid PRIMARY KEY);
CREATE TABLE labeler_messages (message_id uuid PRIMARY KEY, labels jsonb NOT NULL);
CREATE TABLE cases_inbox (event_id uuid PRIMARY KEY);
CREATE TABLE cases_messages (message_id uuid PRIMARY KEY, text text, labels jsonb);
"""
OUTBOX = """
CREATE TABLE {name} (position bigserial PRIMARY KEY, body bytea NOT NULL, published_at timestamptz);
CREATE INDEX ON {name} (position) WHERE published_at IS NULL;
"""


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def schema(namespace: str) -> str:
    return f"{namespace}{SCHEMA_SUFFIX}"


def connect(settings: Settings, **kwargs) -> psycopg.Connection:
    return psycopg.connect(
        plain_url(settings.database_url),
        options=f"-csearch_path={schema(settings.namespace)}",
        **kwargs,
    )


def queue_name(namespace: str, consumer: str) -> str:
    return f"{namespace}.skeleton-{consumer}"


# --- set up and take down (bench/pipeline.py) ----------------------------------------------------
def create(settings: Settings) -> None:
    """The schema, its tables and the two quorum queues, bound to the product's exchange (which
    the product's stack declares)."""
    import pika

    with psycopg.connect(plain_url(settings.database_url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema(settings.namespace)}"')
        conn.execute(f'SET search_path TO "{schema(settings.namespace)}"')
        conn.execute(TABLES)
        for name, _key in OUTBOX_OF.values():
            conn.execute(OUTBOX.format(name=name))
    exchange = topology.exchange_name(settings.namespace)
    with pika.BlockingConnection(pika.URLParameters(settings.broker_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        for consumer, keys in QUEUES.items():
            name = queue_name(settings.namespace, consumer)
            channel.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
            for key in keys:
                channel.queue_bind(name, exchange, key)


def drop(settings: Settings) -> None:
    import pika

    with psycopg.connect(plain_url(settings.database_url), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema(settings.namespace)}" CASCADE')
    with pika.BlockingConnection(pika.URLParameters(settings.broker_url)) as connection:
        channel = connection.channel()
        for consumer in QUEUES:
            channel.queue_delete(queue_name(settings.namespace, consumer))


def labelled(conn: psycopg.Connection) -> int:
    """How many messages the cases consumer holds with their labels."""
    return conn.execute("SELECT count(*) FROM cases_messages WHERE labels IS NOT NULL").fetchone()[
        0
    ]


# --- the web endpoint ----------------------------------------------------------------------------
WEB_INSERT = (
    "WITH message AS (INSERT INTO web_messages (id, body) VALUES (%(id)s, %(body)s)) "
    "INSERT INTO web_outbox (body) VALUES (%(event)s)"
)


def create_app() -> Flask:
    """The webhook committed with its event in one statement (autocommit), then the answer."""
    settings = Settings.from_env()
    local = threading.local()
    app = Flask(__name__)

    @app.post("/webhooks/<org>/flow")
    def accept(org: str):
        body = request.get_data()
        try:
            webhook = json.loads(body)
        except ValueError:
            return jsonify({"error": "not JSON"}), 400
        message_id = str(uuid.uuid4())
        event = {
            "id": str(uuid.uuid4()),
            "name": RECEIVED,
            "org": org,
            "data": {"message_id": message_id, "webhook": webhook},
        }
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(settings, autocommit=True)
        conn.execute(
            WEB_INSERT, {"id": message_id, "body": body, "event": json.dumps(event).encode()}
        )
        return jsonify({"status": "accepted", "message": message_id})

    return app


# --- relays and consumers ------------------------------------------------------------------------
class Stop:
    """Set by SIGTERM: the loops finish what they hold and return."""

    def __init__(self) -> None:
        self.now = False
        signal.signal(signal.SIGTERM, self.set)

    def set(self, *_args) -> None:
        self.now = True


CLAIM = (
    "UPDATE {table} SET published_at = now() WHERE position IN (SELECT position FROM {table} "
    "WHERE published_at IS NULL ORDER BY position LIMIT %(batch)s FOR UPDATE SKIP LOCKED) "
    "RETURNING position, body"
)


def relay(settings: Settings, outbox: str, stop: Stop) -> None:
    """Claim unpublished events, publish them with confirms, commit (a crash before the commit
    publishes them again). Idle: one look every ``relay idle`` (the product's 50 ms)."""
    table, key = OUTBOX_OF[outbox]
    claim = CLAIM.format(table=table)
    publisher = ConfirmingPublisher(settings)
    try:
        with connect(settings) as conn:
            while not stop.now:
                with conn.transaction():
                    rows = conn.execute(claim, {"batch": settings.relay_batch}).fetchall()
                    if rows:
                        sent = publisher.publish([(str(p), key, bytes(b)) for p, b in rows])
                        if len(sent) != len(rows):
                            raise RuntimeError("the broker did not confirm every event")
                if not rows:
                    publisher.idle(0.05)
    finally:
        publisher.close()


def handle_labeler(conn: psycopg.Connection, events: list[dict]) -> None:
    """Each new event: its message's (empty) labels and a skeleton.labeled event."""
    new = _new_events(conn, "labeler_inbox", events)
    if not new:
        return
    ids = [e["data"]["message_id"] for e in new]
    conn.execute(
        "INSERT INTO labeler_messages (message_id, labels) "
        "SELECT m, '[]' FROM unnest(%s::uuid[]) m ON CONFLICT (message_id) DO NOTHING",
        (ids,),
    )
    out = [
        json.dumps(
            {"id": str(uuid.uuid4()), "name": LABELED, "data": {"message_id": m, "labels": []}}
        ).encode()
        for m in ids
    ]
    conn.execute("INSERT INTO labeler_outbox (body) SELECT unnest(%s::bytea[])", (out,))


def handle_cases(conn: psycopg.Connection, events: list[dict]) -> None:
    """A message's text from its skeleton.received, its labels from its skeleton.labeled,
    whichever comes first."""
    new = _new_events(conn, "cases_inbox", events)
    received = [e["data"] for e in new if e["name"] == RECEIVED]
    labeled = [e["data"] for e in new if e["name"] == LABELED]
    if received:
        conn.execute(
            "INSERT INTO cases_messages (message_id, text) SELECT * FROM "
            "unnest(%s::uuid[], %s::text[]) ON CONFLICT (message_id) DO UPDATE "
            "SET text = excluded.text",
            (
                [d["message_id"] for d in received],
                [str(d["webhook"].get("input", {}).get("text")) for d in received],
            ),
        )
    if labeled:
        conn.execute(
            "INSERT INTO cases_messages (message_id, labels) SELECT * FROM "
            "unnest(%s::uuid[], %s::jsonb[]) ON CONFLICT (message_id) DO UPDATE "
            "SET labels = excluded.labels",
            ([d["message_id"] for d in labeled], [json.dumps(d["labels"]) for d in labeled]),
        )


def _new_events(conn: psycopg.Connection, inbox: str, events: list[dict]) -> list[dict]:
    """The events not handled before (their ids inserted into the inbox table now)."""
    rows = conn.execute(
        f"INSERT INTO {inbox} (event_id) SELECT unnest(%s::uuid[]) ON CONFLICT DO NOTHING "
        "RETURNING event_id::text",
        ([e["id"] for e in events],),
    ).fetchall()
    fresh = {r[0] for r in rows}
    return [e for e in events if e["id"] in fresh]


HANDLERS = {"labeler": handle_labeler, "cases": handle_cases}


def consume(settings: Settings, consumer: str, stop: Stop) -> None:
    """Batches of up to ``prefetch`` deliveries, closed ``batch wait`` after their first (the
    product's AmqpWorker): one transaction each, acknowledged after its commit."""
    import pika

    handle = HANDLERS[consumer]
    pending: list[tuple[int, bytes]] = []
    with (
        connect(settings) as conn,
        pika.BlockingConnection(pika.URLParameters(settings.broker_url)) as connection,
    ):
        channel = connection.channel()
        channel.basic_qos(prefetch_count=settings.prefetch)
        channel.basic_consume(
            queue_name(settings.namespace, consumer),
            lambda _ch, method, _props, body: pending.append((method.delivery_tag, body)),
        )
        while not stop.now:
            connection.process_data_events(time_limit=1.0)  # returns once deliveries came
            if not pending:
                continue
            closes = time.monotonic() + settings.batch_wait
            while len(pending) < settings.prefetch and (left := closes - time.monotonic()) > 0:
                connection.process_data_events(time_limit=left)
            with conn.transaction():
                handle(conn, [json.loads(body) for _tag, body in pending])
            channel.basic_ack(pending[-1][0], multiple=True)
            pending.clear()


def main(argv: list[str]) -> int:
    role, name = argv
    settings, stop = Settings.from_env(), Stop()
    if role == "relay":
        relay(settings, name, stop)
    elif role == "consume":
        consume(settings, name, stop)
    else:
        raise SystemExit(f"unknown role {role!r}: relay or consume")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""SIGTERM is a clean stop for every process: web finishes the requests in flight, a worker
finishes and acknowledges the messages in hand, a relay stops after its batch. Each test stops a
real `upartners` process mid-work and counts what happened to every message."""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pika
import pytest
from sqlalchemy import func, insert, select

from services import registry
from services.ingest import handlers as ingest_handlers
from services.ingest.models import Message as IngestMessage
from services.ingest.models import Outbox as IngestOutbox
from services.ingest.models import open_store as open_ingest
from services.labeler.models import Inbox as LabelerInbox
from services.labeler.models import Outbox as LabelerOutbox
from services.labeler.models import open_store as open_labeler
from services.stack import free_base_port
from shared.bus import topology
from shared.bus.connection import declare_topology, kombu_connection
from shared.bus.publisher import ConfirmingPublisher
from shared.bus.topology import QueueSpec
from shared.settings import Settings
from tests.ingest_helpers import ORG, fixture
from tests.labeler_helpers import message_received

pytestmark = pytest.mark.e2e

STOP_BOUND = 30.0  # seconds a process may take to stop after SIGTERM (gunicorn's grace is 20)


# --- processes ----------------------------------------------------------------------------------
def environment(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPARTNERS_")}
    env |= {
        "UPARTNERS_DATABASE_URL": settings.database_url or "",
        "UPARTNERS_BROKER_URL": settings.broker_url or "",
        "UPARTNERS_DATA_DIR": str(settings.data_dir),
        "UPARTNERS_NAMESPACE": settings.namespace,
        "UPARTNERS_DELIVERY_LIMIT": str(settings.delivery_limit),
        "UPARTNERS_RELAY_IDLE": "0.01",
        "UPARTNERS_LOG_FORMAT": "text",
    }
    return {k: v for k, v in (env | extra).items() if v}


@pytest.fixture
def processes(tmp_path):
    """Start `upartners ...` processes (logs in tmp_path); any still running at the end is
    killed by its pid."""
    started: list[subprocess.Popen] = []

    def start(settings: Settings, *args: str, name: str, **env: str) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", *args],
                env=environment(settings, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process.log = log  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def terminate(process: subprocess.Popen) -> tuple[int, float]:
    """SIGTERM; the exit status and how long it took."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=STOP_BOUND)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"no exit {STOP_BOUND}s after SIGTERM:\n{log_of(process)}") from None
    return status, time.monotonic() - started


def log_of(process: subprocess.Popen) -> str:
    return process.log.read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]


def wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited early:\n{log_of(process)}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out" + (f":\n{log_of(process)}" if process else ""))
        time.sleep(0.01)


def count(store, query) -> int:
    with store.db.session() as session:
        return session.scalar(query)


def ready_messages(settings: Settings, queue: str) -> int:
    """Ready messages of a queue, once the count settled (returns reach a quorum queue
    shortly after the consumer's channel closed)."""
    with kombu_connection(settings) as connection:
        channel = connection.channel()
        counts = []
        while len(counts) < 3 or len(set(counts[-3:])) > 1:
            counts.append(channel.queue_declare(queue, passive=True).message_count)
            time.sleep(0.2)
        return counts[-1]


# --- (a) worker ---------------------------------------------------------------------------------
def test_a_worker_finishes_and_acks_what_it_holds(pg_settings, processes):
    total = 1500
    registry.migrate(pg_settings, ("labeler",))
    labeler = open_labeler(pg_settings)
    publisher = ConfirmingPublisher(pg_settings)
    queue = topology.LABELER_MESSAGES.name(pg_settings.namespace)
    inbox = select(func.count()).select_from(LabelerInbox)
    inbox = inbox.where(LabelerInbox.consumer == topology.LABELER_MESSAGES.consumer)

    def labelled_once() -> int:
        """message.labeled events emitted, checking there is one per message.received."""
        with labeler.db.session() as session:
            causes = [e["causation_id"] for e in session.scalars(select(LabelerOutbox.envelope))]
        assert len(causes) == len(set(causes)), "a message was labelled twice"
        return len(causes)

    try:
        events = [message_received(f"message {i}") for i in range(total)]
        assert len(publisher.publish([(e.id, e.name, e.body()) for e in events])) == total

        worker = processes(pg_settings, "worker", "labeler", name="worker-1")
        wait_for(lambda: count(labeler, inbox) >= 100, 60, worker)
        status, took = terminate(worker)
        assert status == 0 and took < 15, (took, log_of(worker))
        handled = count(labeler, inbox)
        assert handled < total, "the worker finished before SIGTERM: publish more"
        # Every message it handled was acknowledged: none of them went back to the queue.
        assert ready_messages(pg_settings, queue) == total - handled
        assert labelled_once() == handled

        worker = processes(pg_settings, "worker", "labeler", name="worker-2")
        wait_for(lambda: count(labeler, inbox) == total, 60, worker)
        status, _ = terminate(worker)
        assert status == 0, log_of(worker)
        # each message handled once: one message.labeled per message.received
        assert labelled_once() == total
        assert ready_messages(pg_settings, queue) == 0
    finally:
        publisher.close()
        labeler.db.dispose()


# --- (b) relay ----------------------------------------------------------------------------------
PROBE = QueueSpec("probe", "shutdown", ("probe.shutdown",))  # bound to this test's events only


def drain_ids(settings: Settings, queue: str, expected: int) -> collections.Counter[str]:
    """The message ids in a queue, taking every message."""
    ids: collections.Counter[str] = collections.Counter()
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        for method, properties, _ in channel.consume(queue, inactivity_timeout=2):
            if method is None:
                break
            ids[properties.message_id] += 1
            if sum(ids.values()) % 500 == 0 or sum(ids.values()) >= expected:
                channel.basic_ack(method.delivery_tag, multiple=True)
        channel.cancel()
    finally:
        connection.close()
    return ids


def test_a_relay_stops_after_its_batch_and_publishes_nothing_twice(pg_settings, processes):
    total = 20000
    registry.migrate(pg_settings, ("ingest",))
    ingest = open_ingest(pg_settings)
    with kombu_connection(pg_settings) as connection:
        declare_topology(connection, pg_settings, [PROBE])
    published = select(func.count()).where(IngestOutbox.published_at.is_not(None))
    try:
        rows = []
        for _ in range(total):
            event_id = str(uuid.uuid4())
            envelope = {"id": event_id, "name": "probe.shutdown", "org": ORG}
            rows.append({"event_id": event_id, "name": "probe.shutdown", "envelope": envelope})
        with ingest.db.session() as session, session.begin():
            session.execute(insert(IngestOutbox), rows)

        relay = processes(pg_settings, "relay", "ingest", name="relay-1")
        wait_for(lambda: count(ingest, published) >= 1000, 60, relay)
        status, took = terminate(relay)
        assert status == 0 and took < 15, (took, log_of(relay))
        stopped_at = count(ingest, published)
        assert stopped_at < total, "the relay finished before SIGTERM: add rows"

        relay = processes(pg_settings, "relay", "ingest", name="relay-2")
        wait_for(lambda: count(ingest, published) == total, 60, relay)
        status, _ = terminate(relay)
        assert status == 0, log_of(relay)

        ids = drain_ids(pg_settings, PROBE.name(pg_settings.namespace), total)
        assert len(ids) == total and set(ids.values()) == {1}
        assert set(ids) == {row["event_id"] for row in rows}
    finally:
        ingest.db.dispose()


# --- (c) web ------------------------------------------------------------------------------------
CUT = "cut"
REFUSED = "refused"


def post_webhook(port: int, secret: str) -> tuple[str, str | None]:
    """One webhook on a new connection: ("200", message id), (REFUSED, None) or (CUT, why)."""
    document = json.loads(fixture("upartners_template.json"))
    document["input"]["uuid"] = str(uuid.uuid4())  # a new message each time
    body = json.dumps(document).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        try:
            connection.connect()
        except ConnectionRefusedError:
            return REFUSED, None
        connection.request(
            "POST",
            f"/webhooks/{ORG}/flow",
            body,
            {"Authorization": f"Token {secret}", "Connection": "close"},
        )
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            return str(response.status), payload.decode(errors="replace")[:200]
        return "200", json.loads(payload)["message"]
    except (OSError, http.client.HTTPException) as exc:
        return CUT, repr(exc)
    finally:
        connection.close()


def sigterm_under_load(process, port: int, secret: str, clients: int, before_stop: int):
    """``clients`` threads post webhooks one after another, each on a new connection, until one
    is not answered 200; SIGTERM once ``before_stop`` were answered. Checks that every request
    got a whole 200 or a refusal, never a cut, that every client ended refused, and that the
    requests in flight at the SIGTERM were answered. Returns the accepted message ids."""
    results: list[tuple[str, str | None]] = []
    lock = threading.Lock()

    def client() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            outcome = post_webhook(port, secret)
            with lock:
                results.append(outcome)
            if outcome[0] != "200":
                return  # refused (the server is gone), or a failure to report

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(results) >= before_stop, 60, process)  # under full load
        with lock:
            at_stop = len(results)
        status, _ = terminate(process)
    finally:
        for thread in threads:
            thread.join(timeout=70)
    assert status == 0, log_of(process)
    outcomes = collections.Counter(kind for kind, _ in results)
    failures = [r for r in results if r[0] not in ("200", REFUSED)]
    assert not failures, (outcomes, failures[:5], log_of(process))
    assert outcomes[REFUSED] == clients  # every client ended on a refusal, none hung
    # the requests in flight at the SIGTERM were answered, not dropped
    assert sum(kind == "200" for kind, _ in results[at_stop:]) >= clients // 2, outcomes
    return {message for kind, message in results if kind == "200"}


def stored_messages(settings: Settings) -> set[str]:
    ingest = open_ingest(settings)
    try:
        with ingest.db.session() as session:
            return set(session.scalars(select(IngestMessage.id)))
    finally:
        ingest.db.dispose()


def new_secret(settings: Settings) -> str:
    registry.migrate(settings, ("ingest",))
    ingest = open_ingest(settings)
    try:
        return ingest_handlers.add_secret(ingest, ORG)[1]
    finally:
        ingest.db.dispose()


def test_web_answers_every_request_in_flight_on_sigterm(pg_settings, processes):
    """gunicorn (2 workers x 8 threads) with 50 clients posting: 34 requests wait in line."""
    secret, port = new_secret(pg_settings), free_base_port()
    bind = f"127.0.0.1:{port}"
    web = processes(
        pg_settings,
        *("web", "ingest", "--bind", bind),
        name="web",
        UPARTNERS_WEB_WORKERS="2",
        UPARTNERS_WEB_THREADS="8",
    )
    wait_for(lambda: post_webhook(port, secret)[0] == "200", 60, web)
    accepted = sigterm_under_load(web, port, secret, clients=50, before_stop=200)
    assert accepted <= stored_messages(pg_settings)  # every 200 was committed


# --- (d) upartners run --------------------------------------------------------------------------
def test_upartners_run_stops_cleanly_with_nothing_in_hand(settings, processes):
    """The embedded default: its web server answers what it took, its loops settle theirs."""
    secret, port = new_secret(settings), free_base_port()
    run = processes(settings, "run", "--port", str(port), name="run")
    wait_for(lambda: post_webhook(port, secret)[0] == "200", 60, run)
    accepted = sigterm_under_load(run, port, secret, clients=20, before_stop=50)
    assert accepted <= stored_messages(settings)
    # No delivery is left leased: every loop settled the message it had taken.
    with contextlib.closing(sqlite3.connect(Path(settings.data_dir, "bus.db"))) as conn:
        leased = conn.execute(
            "SELECT count(*) FROM deliveries WHERE visible_at > ?", (time.time(),)
        ).fetchone()[0]
    assert leased == 0

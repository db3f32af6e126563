"""Benchmark of the labeler end to end: RabbitMQ, the labeler worker processes, PostgreSQL and
the relay, draining a backlog of message.received events.

For each label count, it loads the labels through label events, stops the workers, publishes a
backlog of messages, starts the workers and the relay again, and times until every
message.labeled event has been published (confirmed by RabbitMQ).

    .venv/bin/python bench/labeler_pipeline.py [--messages 10000] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.labeler_rules import make_labels, make_messages, make_topic_words  # noqa: E402
from services.labeler.models import Label as LabelRow  # noqa: E402
from services.labeler.models import Outbox, open_store  # noqa: E402
from services.registry import migrate  # noqa: E402
from shared import events as ev  # noqa: E402
from shared.bus.connection import delete_topology  # noqa: E402
from shared.bus.publisher import ConfirmingPublisher  # noqa: E402
from shared.rules import rule_to_json  # noqa: E402
from shared.settings import Settings  # noqa: E402

DATABASE_URL = os.environ.get(
    "UPARTNERS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BROKER_URL = os.environ.get("UPARTNERS_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
ORG = "bench"


def label_events(labels):
    return [
        ev.new_event(
            ev.LABEL_CREATED,
            org=ORG,
            producer="bench",
            data={
                "label_uuid": label.uuid,
                "name": label.name[:64],
                "synced": label.synced,
                "active": True,
                "rule": rule_to_json(label.tests),
                "label_version": 1,
            },
        )
        for label in labels
    ]


def message_events(messages):
    now = datetime.now(UTC).isoformat()
    return [
        ev.new_event(
            ev.MESSAGE_RECEIVED,
            org=ORG,
            producer="bench",
            data={
                "message_id": str(uuid.uuid4()),
                "contact_uuid": str(uuid.uuid4()),
                "contact_groups": [{"uuid": g, "name": None} for g in m.groups],
                "contact_fields": dict(m.fields),
                "flow_uuid": m.flow or str(uuid.uuid4()),
                "node_uuid": m.node,
                "text": m.text,
                "received_at": now,
            },
        )
        for m in messages
    ]


def publish(settings, events):
    publisher = ConfirmingPublisher(settings)
    for start in range(0, len(events), 1000):
        chunk = events[start : start + 1000]
        confirmed = publisher.publish([(e.id, e.name, e.body()) for e in chunk])
        assert len(confirmed) == len(chunk)
    publisher.close()


def count(store, query):
    with store.db.session() as session:
        return session.scalar(query)


def start_processes(env, workers):
    cmd = [sys.executable, "-m", "services.cli"]
    procs = [
        subprocess.Popen([*cmd, "worker", "labeler"], cwd=REPO, env=env) for _ in range(workers)
    ]
    procs.append(subprocess.Popen([*cmd, "relay", "labeler"], cwd=REPO, env=env))
    return procs


def stop_processes(procs):
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=60)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def run(label_count: int, message_count: int, workers: int) -> tuple[float, float]:
    from sqlalchemy import func, select

    rng = random.Random(1)
    topics = make_topic_words(rng, 400)
    labels = make_labels(rng, label_count, topics)
    messages = make_messages(rng, message_count, topics)
    namespace = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(database_url=DATABASE_URL, broker_url=BROKER_URL, namespace=namespace)
    env = {
        **os.environ,
        "UPARTNERS_DATABASE_URL": DATABASE_URL,
        "UPARTNERS_BROKER_URL": BROKER_URL,
        "UPARTNERS_NAMESPACE": namespace,
        "UPARTNERS_LOG_LEVEL": "WARNING",
    }
    migrate(settings, ("labeler",))
    store = open_store(settings)
    try:
        procs = start_processes(env, workers)
        publish(settings, label_events(labels))
        assert wait_for(
            lambda: count(store, select(func.count()).select_from(LabelRow)) == label_count, 120
        ), "labels not loaded"
        stop_processes(procs)

        publish(settings, message_events(messages))  # the backlog waits in RabbitMQ
        published = select(func.count()).select_from(Outbox).where(Outbox.published_at.is_not(None))
        started = time.perf_counter()
        procs = start_processes(env, workers)
        assert wait_for(lambda: count(store, published) >= message_count, 600), "not drained"
        drained = time.perf_counter() - started
        stop_processes(procs)
        return drained, message_count / drained
    finally:
        store.db.drop_schema()
        store.db.dispose()
        delete_topology(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--labels", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rows = []
    for labels in args.labels:
        for workers in args.workers:
            drained, rate = run(labels, args.messages, workers)
            rows.append((labels, workers, drained, rate))
    print(f"\nlabeler end to end: backlog of {args.messages} messages, {os.cpu_count()} cores")
    print(f"{'labels':>7} {'workers':>8} {'drain (s)':>10} {'messages/s':>11}")
    for labels, workers, drained, rate in rows:
        print(f"{labels:>7} {workers:>8} {drained:>10.1f} {rate:>11.0f}")


if __name__ == "__main__":
    main()

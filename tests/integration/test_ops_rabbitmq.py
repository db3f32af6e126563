"""The ops server of a real RabbitMQ worker and relay: /healthz, /readyz and /metrics, and
/readyz turning 503 when the database cannot be reached."""

from __future__ import annotations

import threading

import pytest
import requests

from shared import metrics
from shared.bus.consumer import AmqpWorker
from shared.bus.dispatch import Subscription
from shared.bus.publisher import ConfirmingPublisher
from shared.ops import OpsServer, heartbeat, relay_readiness, worker_readiness
from shared.relay import Relay
from tests.integration.test_relay_rabbitmq import cleanup_probe
from tests.support import PROBE_QUEUE, Seen, message_received, probe_store, record
from tests.waiting import eventually

pytestmark = pytest.mark.integration

CLOSED_PORT_URL = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def get(server: OpsServer, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=10)


def metric(server: OpsServer, line_start: str) -> float:
    """The value of the first exposition line starting with ``line_start`` (0 if none)."""
    for line in get(server, "/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def seen(store) -> int:
    from sqlalchemy import func, select

    with store.db.session() as session:
        return session.scalar(select(func.count()).select_from(Seen))


def test_a_worker_and_a_relay_answer_probes_and_count_what_they_did(pg_settings):
    store = probe_store(pg_settings)
    # The worker declares the probe queue as it starts consuming; the relay starts after it.
    worker = AmqpWorker(
        pg_settings, [Subscription(PROBE_QUEUE, store, {"message.received": record})]
    )
    relay = Relay(store, ConfirmingPublisher(pg_settings), idle=0.01)
    metrics.watch_outboxes([store])
    servers = [
        OpsServer(0, host="127.0.0.1", alive=heartbeat(worker), ready=worker_readiness(worker)),
        OpsServer(0, host="127.0.0.1", alive=heartbeat(relay), ready=relay_readiness(relay)),
    ]
    threads = [threading.Thread(target=loop.run) for loop in (worker, relay)]
    acked = f'upartners_events_acked_total{{queue="{PROBE_QUEUE.consumer}"}}'
    published = 'upartners_events_published_total{service="probe"}'
    try:
        for server in servers:
            server.start()
        worker_ops, relay_ops = servers
        assert get(worker_ops, "/readyz").status_code == 503  # not consuming yet
        assert get(worker_ops, "/readyz").json()["reason"] == "broker connection down"
        threads[0].start()
        assert eventually(lambda: get(worker_ops, "/readyz").status_code == 200)
        acked_before, published_before = metric(worker_ops, acked), metric(relay_ops, published)

        with store.unit_of_work() as uow:
            for i in range(3):
                uow.add_event(message_received(f"text {i}"))
            uow.commit()
        waiting = 'upartners_outbox_waiting{service="probe"}'
        assert metric(relay_ops, waiting) == 3
        assert metric(relay_ops, 'upartners_outbox_oldest_age_seconds{service="probe"}') >= 0
        threads[1].start()
        assert eventually(lambda: seen(store) == 3)
        assert eventually(lambda: metric(worker_ops, acked) == acked_before + 3)
        assert metric(relay_ops, published) == published_before + 3
        assert eventually(lambda: metric(relay_ops, waiting) == 0)
        for server in servers:
            assert get(server, "/healthz").json() == {"status": "ok"}
            assert get(server, "/readyz").json() == {"status": "ready"}
    finally:
        worker.should_stop = relay.should_stop = True
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=30)
        for server in servers:
            server.stop()
        metrics.outbox_collector().unwatch([store])
        store.db.dispose()
        cleanup_probe(pg_settings)


def test_readiness_fails_when_the_database_cannot_be_reached(pg_settings):
    bad = pg_settings.with_(database_url=CLOSED_PORT_URL)
    from shared.db import Database
    from shared.uow import ServiceStore
    from tests.support import Inbox, Outbox

    store = ServiceStore("probe", Database(bad, "probe"), Outbox, Inbox)
    worker = AmqpWorker(bad, [Subscription(PROBE_QUEUE, store, {"message.received": record})])
    relay = Relay(store, ConfirmingPublisher(bad))
    servers = [
        OpsServer(0, host="127.0.0.1", alive=heartbeat(worker), ready=worker_readiness(worker)),
        OpsServer(0, host="127.0.0.1", alive=heartbeat(relay), ready=relay_readiness(relay)),
    ]
    try:
        for server in servers:
            server.start()
            answer = get(server, "/readyz")
            assert answer.status_code == 503
            assert answer.json()["reason"].startswith("database of probe unavailable")
            assert "127.0.0.1:1" not in answer.text  # a reason, not the URL
            assert get(server, "/healthz").status_code == 200  # alive: it waits, no restart
    finally:
        for server in servers:
            server.stop()
        store.db.dispose()

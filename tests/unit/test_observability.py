"""Observability: JSON log lines with the correlation id, the redaction safety net, HTTP /
consumer / flow-engine metrics, the outbox collector and the ops server of workers and relays."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import exc as sa_exc

from fakes.rapidpro import create_app as create_fake
from services.flowbridge.flow_engine import FlowEngineUnavailable, RapidProClient
from shared import metrics
from shared.bus.dispatch import Subscription, dispatch
from shared.bus.embedded import EmbeddedBus
from shared.events import new_event
from shared.logs import configure_logging, log_context, make_handler, redact
from shared.ops import OpsServer, heartbeat
from shared.uow import ServiceStore
from tests.fakes_server import FakeControl, serve_app
from tests.ingest_helpers import ORG, fixture, make_ingest
from tests.support import PROBE_QUEUE, Outbox, message_received, probe_store, record

QUEUE = PROBE_QUEUE.consumer
URN = "tel:+250788000111"
PHONE = "+250 788 000 222"
UUID = "8a0c6a7e-0000-4000-8000-000000000001"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- logs ---------------------------------------------------------------------------------------
@pytest.fixture
def json_log(capsys) -> Iterator[tuple[logging.Logger, callable]]:
    """A logger with the product's handler only; yields (logger, lines written so far)."""
    logger = logging.getLogger("tests.observability")
    handler = make_handler("worker-test", "json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[str]:
        return capsys.readouterr().err.splitlines()

    yield logger, lines
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_json_line_has_the_fields_and_the_correlation_id_of_the_context(json_log):
    logger, lines = json_log
    with log_context(correlation_id="corr-1", event_id=UUID, event="message.received"):
        logger.info("handled %s", "it")
    logger.warning("outside")
    inside, outside = (json.loads(line) for line in lines())
    assert inside["msg"] == "handled it"
    assert inside["level"] == "INFO" and inside["logger"] == "tests.observability"
    assert inside["process"] == "worker-test" and isinstance(inside["pid"], int)
    assert inside["ts"].endswith("Z") and "T" in inside["ts"]
    assert (inside["correlation_id"], inside["event_id"], inside["event"]) == (
        "corr-1",
        UUID,
        "message.received",
    )
    assert "correlation_id" not in outside and "exc" not in outside


def test_nested_contexts_add_to_each_other_and_are_undone(json_log):
    logger, lines = json_log
    with log_context(correlation_id="outer"):
        with log_context(event_id=UUID):
            logger.info("inner")
        logger.info("outer")
    first, second = (json.loads(line) for line in lines())
    assert first["correlation_id"] == "outer" and first["event_id"] == UUID
    assert second["correlation_id"] == "outer" and "event_id" not in second


def test_a_traceback_is_one_field_and_is_redacted(json_log):
    logger, lines = json_log
    try:
        raise ValueError(f"could not reach {URN}")
    except ValueError:
        logger.exception("failed for %s", URN)
    (line,) = lines()  # one line, even with a traceback
    entry = json.loads(line)
    assert "ValueError" in entry["exc"] and "Traceback" in entry["exc"]
    assert URN not in line and "788000111" not in line
    assert entry["msg"] == "failed for [urn]"


def test_the_text_format_is_one_readable_line(capsys):
    logger = logging.getLogger("tests.observability.text")
    handler = make_handler("relay-test", "text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(correlation_id="corr-2"):
            logger.warning("relay %s", "stuck")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = capsys.readouterr().err.strip()
    assert "WARNING" in line and "relay-test[" in line and "relay stuck" in line
    assert "correlation_id=corr-2" in line


@pytest.mark.parametrize(
    "text, gone",
    [
        (f"contact {URN} wrote", URN),
        ("whatsapp:250788000333 and more", "250788000333"),
        ("Telegram:12345678", "12345678"),
        ("mailto:ann@example.org", "ann@example.org"),
        (f"call {PHONE} now", "788 000 222"),
        ("local (078) 812-3456", "812-3456"),
        ("POST /webhooks/x/flow?token=s3cr3t-Value&x=1", "s3cr3t-Value"),
        ("Authorization: Token abcdefghij123", "abcdefghij123"),
        ('{"Authorization": "Bearer abcdefghij456"}', "abcdefghij456"),
        ("sent with Bearer abcdefghij789", "abcdefghij789"),
        ("postgresql+psycopg://app:hunter2@db:5432/x", "hunter2"),
        ("from 10.0.0.12:5432 number 5511987654321", "5511987654321"),
        ("dotted +55.11.98765.4321", "98765.4321"),
        ("dotted 078.812.3456", "812.3456"),
        ("dotted 250.788.000.222 (no address: 788 is not an octet)", "788.000.222"),
    ],
)
def test_redaction_scrubs_urns_phones_and_credentials(text, gone):
    assert gone not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        f"event {UUID} handled",
        "12345678-1234-4234-8234-123456789012",  # a UUID of digits only
        "at 2026-11-21T10:00:00.123456+00:00",
        "at 2026-11-21 10:00:00,123 then 2026-11-22",
        "took 0.123456789s, port 5432, 3 of 10",
        'File "x.py", line 120, in handle',
        "hotel:5 and relay ingest: idle",
        "Listening at: http://127.0.0.1:24694,http://0.0.0.0:24704 (5313)",
        "Python 3.11.7, PostgreSQL 15.20.1, took 0.25.1 and 1.2.3.4",
        "connection from 192.168.100.200 closed",
    ],
)
def test_redaction_keeps_ids_timestamps_and_ordinary_text(text):
    assert redact(text) == text


def test_configure_logging_leaves_a_configured_root_alone_unless_forced():
    root = logging.getLogger()
    before = list(root.handlers)
    settings = type("S", (), {"log_format": "json", "log_level": "DEBUG"})()
    configure_logging(settings, "test")  # pytest's handlers are on the root logger
    assert root.handlers == before


# --- HTTP metrics -------------------------------------------------------------------------------
def test_http_requests_are_counted_by_url_rule_and_status(settings):
    app, store, secret = make_ingest(settings.with_(ops_port=9100))
    client = app.test_client()
    rule = "/webhooks/<org>/flow"
    labels = {"service": "ingest", "endpoint": rule, "method": "POST"}
    before = {
        s: sample("upartners_http_requests_total", **labels, status=s) for s in ("200", "401")
    }
    count_before = sample("upartners_http_request_duration_seconds_count", **labels)
    unmatched = {"service": "ingest", "endpoint": "<unmatched>", "method": "GET", "status": "404"}
    unmatched_before = sample("upartners_http_requests_total", **unmatched)
    try:
        body = fixture("resthook.json")
        assert client.post(f"/webhooks/{ORG}/flow", data=body).status_code == 401
        answer = client.post(
            f"/webhooks/{ORG}/flow", data=body, headers={"Authorization": f"Token {secret}"}
        )
        assert answer.status_code == 200
        assert client.get("/no/such/path").status_code == 404
        exposition = client.get("/metrics", environ_overrides={"SERVER_PORT": "9100"})
    finally:
        store.db.dispose()
    assert sample("upartners_http_requests_total", **labels, status="401") == before["401"] + 1
    assert sample("upartners_http_requests_total", **labels, status="200") == before["200"] + 1
    assert sample("upartners_http_request_duration_seconds_count", **labels) == count_before + 2
    assert sample("upartners_http_requests_total", **unmatched) == unmatched_before + 1
    assert exposition.status_code == 200 and exposition.mimetype == "text/plain"
    text = exposition.get_data(as_text=True)
    assert 'upartners_http_requests_total{endpoint="/webhooks/<org>/flow"' in text
    assert "/no/such/path" not in text  # never the raw path


def test_a_request_id_is_answered_and_only_a_safe_one_is_taken_over(settings):
    app, store, _ = make_ingest(settings)
    client = app.test_client()
    try:
        mine = client.get("/healthz", headers={"X-Request-ID": "req-12345678"})
        unsafe = client.get("/healthz", headers={"X-Request-ID": f"{URN} x"})
        none = client.get("/healthz")
    finally:
        store.db.dispose()
    assert mine.headers["X-Request-ID"] == "req-12345678"
    assert len(unsafe.headers["X-Request-ID"]) == 36  # replaced by a new one
    assert len(none.headers["X-Request-ID"]) == 36


def test_request_ids_of_our_own_come_out_of_the_logs_whole():
    """Redaction turns long digit runs into [phone]; the ids we make must never look like one."""
    from shared.http import request_id

    made = [request_id(None) for _ in range(2000)]
    assert [i for i in made if redact(f"correlation_id={i}") != f"correlation_id={i}"] == []
    assert redact("12345678e4bcba3fdcaaa918c1607abc") != "12345678e4bcba3fdcaaa918c1607abc"


def test_web_apps_serve_metrics_on_the_ops_port_only(settings):
    """The listener's own port (SERVER_PORT), not a Host header, decides."""
    from services.cases.app import create_app

    ops = create_app(settings.with_(ops_port=9100)).test_client()
    answer = ops.get("/metrics", environ_overrides={"SERVER_PORT": "9100"})
    assert answer.status_code == 200
    assert "upartners_http_requests_total" in answer.get_data(as_text=True)
    assert ops.get("/metrics").status_code == 404  # the public port
    assert ops.get("/metrics", headers={"Host": "localhost:9100"}).status_code == 404
    no_ops = create_app(settings).test_client()
    assert no_ops.get("/metrics", environ_overrides={"SERVER_PORT": "9100"}).status_code == 404


# --- consuming ----------------------------------------------------------------------------------
def test_outcomes_on_the_embedded_bus_are_counted_by_queue(settings):
    settings = settings.with_(delivery_limit=2)
    bus = EmbeddedBus(settings, queues=(PROBE_QUEUE,))
    store = probe_store(settings)

    def fails(uow, envelope):
        raise RuntimeError("bug")

    good = Subscription(PROBE_QUEUE, store, {"message.received": record})
    bad = Subscription(PROBE_QUEUE, store, {"message.received": fails})
    names = ("consumed", "acked", "retried", "dead_lettered")
    before = {n: sample(f"upartners_events_{n}_total", queue=QUEUE) for n in names}
    try:
        event = message_received()
        bus.publish([(event.id, event.name, event.body())])
        assert bus.consume_one(good, lambda: False)  # ack
        failing = message_received(message_id=UUID)
        bus.publish([(failing.id, failing.name, failing.body())])
        assert bus.consume_one(bad, lambda: False)  # retry (delivery 1 of 2)
        queue = PROBE_QUEUE.name(settings.namespace)
        bus._connect().execute("UPDATE deliveries SET visible_at = 0 WHERE queue = ?", (queue,))
        assert bus.consume_one(bad, lambda: False)  # the limit: dead-lettered
        bus.publish([("bad", "message.received", b'{"not": "an envelope"}')])
        assert bus.consume_one(good, lambda: False)  # dead at once
    finally:
        bus.close()
        store.db.dispose()
    after = {n: sample(f"upartners_events_{n}_total", queue=QUEUE) for n in names}
    delta = {n: after[n] - before[n] for n in names}
    assert delta == {"consumed": 4, "acked": 1, "retried": 1, "dead_lettered": 2}


def test_dispatch_logs_each_event_with_its_correlation_id(settings, capsys):
    store = probe_store(settings)
    event = new_event(
        "message.received",
        org="demo",
        producer="test",
        data=message_received().data,
        correlation_id="corr-from-the-webhook",
    )
    handler_log = logging.getLogger("tests.observability.handler")

    def handle(uow, envelope):
        handler_log.info("labelling")
        record(uow, envelope)

    handler = make_handler("worker-test", "json")
    for name in ("shared.bus.dispatch", handler_log.name):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        dispatch(Subscription(PROBE_QUEUE, store, {"message.received": handle}), event.body())
    finally:
        for name in ("shared.bus.dispatch", handler_log.name):
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(logging.NOTSET)
        store.db.dispose()
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["msg"] for e in entries] == [
        "labelling",
        f"handled message.received {event.id} on {QUEUE}",
    ]
    for entry in entries:
        assert entry["correlation_id"] == "corr-from-the-webhook"
        assert (entry["event_id"], entry["event"]) == (event.id, "message.received")


# --- the flow engine ----------------------------------------------------------------------------
def test_flow_engine_calls_are_counted_by_endpoint_and_status():
    token = "obs-token-1234567890"
    with serve_app(create_fake()) as url:
        FakeControl(url).create_workspace(
            {"name": "obs", "token": token, "groups": [{"name": "Bot"}]}
        )
        ok = sample("upartners_flow_engine_calls_total", endpoint="groups", status="200")
        refused = sample("upartners_flow_engine_calls_total", endpoint="groups", status="403")
        with RapidProClient(url, token) as engine:
            assert [g.name for g in engine.list_groups()] == ["Bot"]
        with RapidProClient(url, "wrong-token") as engine, pytest.raises(Exception):  # noqa: B017
            engine.list_groups()
    assert sample("upartners_flow_engine_calls_total", endpoint="groups", status="200") == ok + 1
    assert (
        sample("upartners_flow_engine_calls_total", endpoint="groups", status="403") == refused + 1
    )
    assert sample("upartners_flow_engine_call_duration_seconds_count", endpoint="groups") >= 2


def test_an_unreachable_engine_counts_as_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once the socket is closed
    before = sample("upartners_flow_engine_calls_total", endpoint="contacts", status="error")
    engine = RapidProClient(f"http://127.0.0.1:{port}", "t", max_attempts=2, sleep=lambda _s: None)
    with engine, pytest.raises(FlowEngineUnavailable):
        engine.get_contact(UUID)
    after = sample("upartners_flow_engine_calls_total", endpoint="contacts", status="error")
    assert after == before + 2


@pytest.mark.parametrize(
    "path, endpoint",
    [
        ("/api/v2/contact_actions.json", "contact_actions"),
        ("/api/v2/flow_starts.json", "flow_starts"),
        ("/somewhere/else/entirely.json", "other"),
    ],
)
def test_flow_engine_endpoint_labels_are_a_fixed_set(path, endpoint):
    assert metrics.flow_engine_endpoint(path) == endpoint


# --- the outbox backlog -------------------------------------------------------------------------
class DeadDatabase:
    def session(self):
        raise sa_exc.OperationalError("SELECT count(*)", {}, ConnectionRefusedError("refused"))


def test_the_outbox_collector_reports_the_backlog_and_survives_a_dead_database(settings, caplog):
    store = probe_store(settings)
    broken = ServiceStore("broken", DeadDatabase(), Outbox)
    registry = CollectorRegistry()
    collector = metrics.OutboxCollector()
    registry.register(collector)
    try:
        collector.watch([store])
        assert registry.get_sample_value("upartners_outbox_waiting", {"service": "probe"}) == 0
        for text in ("a", "b"):
            with store.unit_of_work() as uow:
                uow.add_event(message_received(text))
                uow.commit()
        waiting = registry.get_sample_value("upartners_outbox_waiting", {"service": "probe"})
        age = registry.get_sample_value("upartners_outbox_oldest_age_seconds", {"service": "probe"})
        assert waiting == 2 and 0 <= age < 60

        collector.watch([broken])
        with caplog.at_level(logging.WARNING, logger="shared.metrics"):
            for _ in range(2):
                text = metrics.exposition(registry)[0].decode()
                assert 'upartners_outbox_waiting{service="probe"} 2.0' in text
                assert 'service="broken"' not in text
        warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
        assert len(warnings) == 1  # once, not at every scrape
    finally:
        store.db.dispose()


# --- the ops server -----------------------------------------------------------------------------
class Loop:
    last_beat = 0.0


def test_the_ops_server_answers_health_readiness_and_metrics():
    loop = Loop()
    loop.last_beat = time.monotonic()
    problems: list[str] = []
    server = OpsServer(
        0,
        host="127.0.0.1",
        alive=heartbeat(loop, stale_after=30),
        ready=lambda: problems[0] if problems else None,
    )
    with server:
        base = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{base}/readyz", timeout=5).json() == {"status": "ready"}
        problems.append("broker connection down")
        answer = requests.get(f"{base}/readyz", timeout=5)
        assert answer.status_code == 503
        assert answer.json() == {"status": "unavailable", "reason": "broker connection down"}
        loop.last_beat = time.monotonic() - 31  # the loop stopped turning
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 503
        scraped = requests.get(f"{base}/metrics", timeout=5)
        assert scraped.status_code == 200 and "upartners_events_acked_total" in scraped.text
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    with socket.socket() as sock:  # stopped: the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))


def test_the_ops_port_option_wins_over_the_setting_and_none_means_no_server():
    from services.cli import build_parser, serve_ops
    from shared.settings import Settings

    args = build_parser().parse_args(["worker", "labeler", "--ops-port", "0"])
    server = serve_ops(args, Settings(ops_port=1), Loop(), lambda: None)
    try:
        assert server is not None and server.port not in (0, 1)  # port 0: a free one
    finally:
        server.stop()
    unset = build_parser().parse_args(["relay", "ingest"])
    assert serve_ops(unset, Settings(), Loop(), None) is None

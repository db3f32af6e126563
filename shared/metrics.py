"""Prometheus metrics of every process, and how each process exposes them.

The metric objects are module-level, as prometheus-client expects (creating one registers it
with the default registry; nothing is measured or connected at import). Web processes run
under gunicorn with several worker processes: ``upartners web`` sets PROMETHEUS_MULTIPROC_DIR
before gunicorn starts, prometheus-client then keeps values in per-process files there, and
``/metrics`` sums them with a MultiProcessCollector. Workers and relays are single processes
and use the default registry, plus a collector that reads the outbox backlog at scrape time.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "<unmatched>"

# --- HTTP (web processes) -----------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "upartners_http_requests",
    "HTTP requests answered, by Flask url rule (never the raw path) and status",
    (
        "service",
        "endpoint",
        "method",
        "status",
    ),
)
HTTP_DURATION = Histogram(
    "upartners_http_request_duration_seconds",
    "Time from the request's start to its answer",
    ["service", "endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# --- consuming (workers) ------------------------------------------------------------------------
EVENTS_CONSUMED = Counter(
    "upartners_events_consumed", "Events received from a queue and dispatched", ["queue"]
)
EVENTS_ACKED = Counter(
    "upartners_events_acked", "Events handled (or found handled before) and acknowledged", ["queue"]
)
EVENTS_RETRIED = Counter(
    "upartners_events_retried", "Events given back to their queue to be tried again", ["queue"]
)
EVENTS_DEAD_LETTERED = Counter(
    "upartners_events_dead_lettered", "Events moved to the dead-letter queue", ["queue"]
)
_OUTCOME_COUNTERS = {"ack": EVENTS_ACKED, "retry": EVENTS_RETRIED, "dead": EVENTS_DEAD_LETTERED}

# --- publishing (relays) ------------------------------------------------------------------------
EVENTS_PUBLISHED = Counter(
    "upartners_events_published", "Outbox events confirmed by the broker", ["service"]
)

# --- the flow engine (flowbridge) ---------------------------------------------------------------
FLOW_ENGINE_CALLS = Counter(
    "upartners_flow_engine_calls",
    "HTTP calls to a flow engine, by API endpoint and status code ('error': no answer)",
    ["endpoint", "status"],
)
FLOW_ENGINE_DURATION = Histogram(
    "upartners_flow_engine_call_duration_seconds",
    "Time of one HTTP call to a flow engine",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FLOW_ENGINE_ENDPOINTS = frozenset(
    [
        "archives",
        "boundaries",
        "broadcasts",
        "campaign_events",
        "campaigns",
        "channels",
        "classifiers",
        "contact_actions",
        "contacts",
        "definitions",
        "fields",
        "flow_starts",
        "flows",
        "globals",
        "groups",
        "labels",
        "me",
        "message_actions",
        "messages",
        "optins",
        "org",
        "resthook_events",
        "resthook_subscribers",
        "resthooks",
        "runs",
        "ticket_actions",
        "tickets",
        "topics",
        "users",
        "workspace",
    ]
)


def record_outcome(queue: str, outcome: str, count: int = 1) -> None:
    """One consumed event's verdict ("ack", "retry" or "dead") on a queue (its consumer name)."""
    EVENTS_CONSUMED.labels(queue).inc(count)
    _OUTCOME_COUNTERS[outcome].labels(queue).inc(count)


def record_outcomes(queue: str, outcomes: Iterable[Any]) -> None:
    """Verdicts of a batch (``Outcome`` members or their values)."""
    for outcome in outcomes:
        record_outcome(queue, getattr(outcome, "value", outcome))


def flow_engine_endpoint(path: str) -> str:
    """``/api/v2/contact_actions.json`` -> ``contact_actions``; anything else -> ``other``
    (labels stay a small fixed set whatever URL an engine sends back in ``next``)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
    return name if name in FLOW_ENGINE_ENDPOINTS else "other"


def record_flow_engine_call(endpoint: str, status: int | str, seconds: float) -> None:
    FLOW_ENGINE_CALLS.labels(endpoint, str(status)).inc()
    FLOW_ENGINE_DURATION.labels(endpoint).observe(seconds)


# --- the outbox backlog, read at scrape time ----------------------------------------------------
class OutboxCollector:
    """``upartners_outbox_waiting`` and ``upartners_outbox_oldest_age_seconds`` per service.

    Queried at each scrape (one indexed query per service: the partial index on unpublished
    rows). A database error skips the samples and is logged once until the database answers.
    """

    def __init__(self) -> None:
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._failing: set[str] = set()

    def watch(self, stores: Iterable[Any]) -> None:
        with self._lock:
            self._stores.update({store.service: store for store in stores})

    def unwatch(self, stores: Iterable[Any]) -> None:
        with self._lock:
            for store in stores:
                if self._stores.get(store.service) is store:
                    del self._stores[store.service]

    def describe(self) -> list:
        return []  # nothing to check at registration, and no query then

    def collect(self) -> Iterable[GaugeMetricFamily]:
        waiting = GaugeMetricFamily(
            "upartners_outbox_waiting", "Outbox events not yet published", labels=["service"]
        )
        oldest = GaugeMetricFamily(
            "upartners_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox event (0 when none waits)",
            labels=["service"],
        )
        with self._lock:
            stores = dict(self._stores)
        for service, store in sorted(stores.items()):
            try:
                count, age = outbox_backlog(store)
            except Exception as exc:  # noqa: BLE001 (a scrape must not fail on the database)
                if service not in self._failing:
                    self._failing.add(service)
                    log.warning(
                        "outbox of %s unreadable for metrics: %s",
                        service,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                    )
                continue
            self._failing.discard(service)
            waiting.add_metric([service], count)
            oldest.add_metric([service], age)
        return [waiting, oldest]


def outbox_backlog(store: Any) -> tuple[int, float]:
    """(unpublished rows, age in seconds of the oldest one) of a service's outbox."""
    from sqlalchemy import func, select

    from shared.db import utcnow

    outbox = store.outbox
    with store.db.session() as session:
        count, first = session.execute(
            select(func.count(), func.min(outbox.created_at)).where(outbox.published_at.is_(None))
        ).one()
    if not count or first is None:
        return int(count or 0), 0.0
    if isinstance(first, str):  # in case a driver hands min() back untyped
        first = datetime.fromisoformat(first)
    if first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return int(count), max(0.0, (utcnow() - first).total_seconds())


_OUTBOX: OutboxCollector | None = None
_OUTBOX_LOCK = threading.Lock()


def outbox_collector() -> OutboxCollector:
    """The process's one outbox collector, registered with the default registry on first use."""
    global _OUTBOX
    with _OUTBOX_LOCK:
        if _OUTBOX is None:
            _OUTBOX = OutboxCollector()
            REGISTRY.register(_OUTBOX)
        return _OUTBOX


def watch_outboxes(stores: Iterable[Any]) -> None:
    """Report these services' outbox backlog on this process's /metrics."""
    outbox_collector().watch(stores)


# --- exposition ---------------------------------------------------------------------------------
def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def scrape_registry() -> CollectorRegistry:
    """The registry to expose: every gunicorn worker's files summed, else this process's."""
    if not multiprocess():
        return REGISTRY
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)
    return registry


def exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The text exposition format and its content type."""
    return generate_latest(registry or scrape_registry()), CONTENT_TYPE_LATEST

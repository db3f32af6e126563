"""The embedded bus: the RabbitMQ semantics the product relies on, in one SQLite file.

Used when no broker is configured. Publishing routes an event to the same queues as RabbitMQ
would (shared.bus.topology) and commits it to disk before it counts as confirmed. Consuming
leases a message, dispatches it with the same code as the RabbitMQ consumer, and deletes it only
after the handler committed; a failed message is retried with backoff and moved to its
``.dlq`` after the delivery limit. A message leased by a process that died becomes visible again
at the next start, so nothing accepted is lost across a restart.

Why not one of kombu's virtual transports: they drop unacknowledged messages when the process
dies (kombu's SQLAlchemy transport hides a message on fetch and only restores it on a clean
channel close), which would break the promise above.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from shared import metrics
from shared.backoff import backoff
from shared.bus import topology
from shared.bus.chores import Chore, Chores
from shared.bus.dispatch import Outcome, Subscription, dispatch
from shared.bus.topology import QueueSpec
from shared.settings import Settings

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_deliveries_queue ON deliveries (queue, visible_at, id);
"""


class EmbeddedBus:
    def __init__(self, settings: Settings, queues: Sequence[QueueSpec] = topology.QUEUES) -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.path: Path = settings.data_dir / "bus.db"
        self.namespace = settings.namespace
        self.delivery_limit = settings.delivery_limit
        self.queues = tuple(queues)
        self._local = threading.local()
        self._published = threading.Condition()
        with self._connect() as conn:
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    # publishing: the relay's transport
    def publish(self, messages: Sequence[tuple[str, str, bytes]]) -> list[str]:
        rows = [
            (spec.name(self.namespace), message_id, body)
            for message_id, routing_key, body in messages
            for spec in topology.routes(routing_key, self.queues)
        ]
        now = time.time()
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO deliveries (queue, message_id, body, visible_at) VALUES (?, ?, ?, ?)",
                [(queue, message_id, body, now) for queue, message_id, body in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        with self._published:
            self._published.notify_all()
        return [message_id for message_id, _, _ in messages]

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # consuming
    def recover(self) -> int:
        """At start-up: every lease belongs to a process that is gone, so release them all."""
        cursor = self._connect().execute(
            "UPDATE deliveries SET visible_at = ? WHERE visible_at > ?", (time.time(), time.time())
        )
        return cursor.rowcount

    def _claim(self, queue: str) -> tuple[int, bytes, int] | None:
        now = time.time()
        return (
            self._connect()
            .execute(
                "UPDATE deliveries SET visible_at = ?, deliveries = deliveries + 1 WHERE id = ("
                " SELECT id FROM deliveries WHERE queue = ? AND visible_at <= ? ORDER BY id LIMIT 1"
                ") RETURNING id, body, deliveries",
                (now + LEASE_SECONDS, queue, now),
            )
            .fetchone()
        )

    def consume_one(self, subscription: Subscription, should_stop: Callable[[], bool]) -> bool:
        """Handle the next visible message of the subscription's queue; False if there was none."""
        queue = subscription.queue.name(self.namespace)
        claimed = self._claim(queue)
        if claimed is None:
            return False
        row_id, body, deliveries = claimed
        outcome = dispatch(subscription, body, should_stop=should_stop)
        conn = self._connect()
        if outcome is Outcome.ACK:
            conn.execute("DELETE FROM deliveries WHERE id = ?", (row_id,))
        elif outcome is Outcome.DEAD or deliveries >= self.delivery_limit:
            outcome = Outcome.DEAD
            conn.execute(
                "UPDATE deliveries SET queue = ?, visible_at = ? WHERE id = ?",
                (topology.dlq_name(queue), time.time(), row_id),
            )
        else:
            conn.execute(
                "UPDATE deliveries SET visible_at = ? WHERE id = ?",
                (time.time() + backoff(deliveries), row_id),
            )
        metrics.record_outcome(subscription.queue.consumer, outcome.value)
        return True

    def wait_for_messages(self, timeout: float) -> None:
        with self._published:
            self._published.wait(timeout)

    def depth(self, queue: str) -> int:
        row = (
            self._connect()
            .execute("SELECT count(*) FROM deliveries WHERE queue = ?", (queue,))
            .fetchone()
        )
        return int(row[0])

    # dead letters (shared.bus.dlq): a dead row is the same row, moved to ``<queue>.dlq``
    def dead_letters(self, queue: str, limit: int) -> list[tuple[str, bytes, int, float]]:
        """Up to ``limit`` of a queue's dead messages, oldest first, left in place:
        (message id, body, deliveries before death, when it died)."""
        return (
            self._connect()
            .execute(
                "SELECT message_id, body, deliveries, visible_at FROM deliveries"
                " WHERE queue = ? ORDER BY id LIMIT ?",
                (topology.dlq_name(queue), limit),
            )
            .fetchall()
        )

    def replay_dead(self, queue: str, limit: int | None = None) -> int:
        """Move dead messages back to their queue with a fresh delivery count, in one
        transaction (so a replay is bounded to what was dead when it started)."""
        cursor = self._connect().execute(
            "UPDATE deliveries SET queue = ?, deliveries = 0, visible_at = ? WHERE id IN ("
            " SELECT id FROM deliveries WHERE queue = ? ORDER BY id LIMIT ?)",
            (queue, time.time(), topology.dlq_name(queue), -1 if limit is None else limit),
        )
        if cursor.rowcount:
            with self._published:
                self._published.notify_all()
        return cursor.rowcount

    def purge_dead(self, queue: str) -> int:
        cursor = self._connect().execute(
            "DELETE FROM deliveries WHERE queue = ?", (topology.dlq_name(queue),)
        )
        return cursor.rowcount


LONG_GRACE = 20.0  # seconds a long handler in flight is waited for at stop, as on RabbitMQ


class EmbeddedWorker:
    """Consumes subscriptions from the embedded bus until stopped.

    A ``long`` subscription (an export's build: minutes) is consumed by a thread of its own,
    so that the other queues are not held up meanwhile and ``last_beat`` goes on telling that
    the worker is alive; as on RabbitMQ, its messages are handled one at a time.
    """

    def __init__(
        self,
        bus: EmbeddedBus,
        subscriptions: Sequence[Subscription],
        chores: Sequence[Chore] = (),
    ) -> None:
        self.bus = bus
        self.chores = Chores(chores)
        self.subscriptions = [s for s in subscriptions if not s.long]
        self.long_subscriptions = [s for s in subscriptions if s.long]
        self.should_stop = False
        self.last_beat = time.monotonic()  # the ops server's liveness (shared/ops.py)

    def run(self) -> None:
        helper = None
        if self.long_subscriptions:
            helper = threading.Thread(
                target=self._consume,
                args=(self.long_subscriptions, False),
                name="long-handlers",
                daemon=True,  # one still running past the grace is dropped: it is restartable
            )
            helper.start()
        try:
            self._consume(self.subscriptions, True)
        finally:
            self.should_stop = True
            if helper is not None:
                helper.join(LONG_GRACE)

    def _consume(self, subscriptions: Sequence[Subscription], beats: bool) -> None:
        try:
            while not self.should_stop:
                if beats:
                    self.last_beat = time.monotonic()
                    self.chores.run_due()
                handled = False
                for subscription in subscriptions:
                    handled |= self.bus.consume_one(subscription, lambda: self.should_stop)
                if not handled:
                    self.bus.wait_for_messages(0.2)
        finally:
            self.bus.close()  # this thread's connection

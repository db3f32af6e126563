"""The outbox relay: publishes a service's committed events and marks them sent once confirmed.

Run one or more per service database. On PostgreSQL each batch is claimed with
``FOR UPDATE SKIP LOCKED``, so several relays share the work without publishing a row twice in
the normal case; a row is marked published only after the broker confirmed it (a crash between
the two republishes it, and consumers' inboxes absorb the duplicate).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy import exc as sa_exc

from shared import metrics
from shared.backoff import backoff
from shared.bus.topology import routing_key
from shared.db import utcnow
from shared.uow import ServiceStore

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, messages: Sequence[tuple[str, str, bytes]]) -> list[str]: ...
    def idle(self, seconds: float) -> None: ...
    def close(self) -> None: ...


QUIET_AFTER = 2.0  # seconds without a row after which a relay looks less often
QUIET_SLOWER = 5  # how many times less often (every 0.25 s at the default 50 ms)


class Relay:
    def __init__(
        self,
        store: ServiceStore,
        publisher: Publisher,
        *,
        batch: int = 500,
        idle: float = 0.05,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.batch = batch
        self.idle = idle
        self.retention = retention
        self.should_stop = False
        self.published = 0
        # For the ops server (shared/ops.py): liveness, and why the last attempt failed.
        self.last_beat = time.monotonic()
        self.failing: str | None = None
        self._look: Connection | None = None  # held open for ``anything_waiting``
        outbox = store.outbox
        self._waiting = select(outbox.position).where(outbox.published_at.is_(None)).limit(1)
        table = outbox.__table__
        oldest = (
            select(table.c.position)
            .where(table.c.published_at.is_(None))
            .order_by(table.c.position)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        self._claim = (
            update(table)
            .where(table.c.position.in_(oldest.scalar_subquery()))
            .values(published_at=bindparam("now", type_=table.c.published_at.type))
            .returning(table.c.position, table.c.event_id, table.c.name, table.c.envelope)
        )

    def anything_waiting(self) -> bool:
        """A cheap look for unpublished rows, made before claiming a batch: one indexed query
        on a connection held open in autocommit, where a claim costs a pool checkout, BEGIN,
        the claiming UPDATE and COMMIT. An idle relay looks every ``idle`` seconds,
        so this is most of what it does. (On SQLite, the embedded default, every transaction
        takes the write lock: there the relay claims a batch each time.) After a claim that
        found rows, ``run`` claims the next batch without this look."""
        if not self.store.db.is_postgres:
            return True
        try:
            if self._look is None:
                self._look = self.store.db.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            return self._look.execute(self._waiting).first() is not None
        except sa_exc.DBAPIError:
            self._close_look()  # a new connection next time (the database may have restarted)
            raise

    def _close_look(self) -> None:
        look, self._look = self._look, None
        if look is not None:
            with contextlib.suppress(sa_exc.DBAPIError):
                look.invalidate()
                look.close()

    def relay_once(self) -> int:
        """Publish one batch of unpublished rows; return how many were confirmed.

        One statement claims the batch and marks it published (``UPDATE ... WHERE position IN
        (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``); the transaction stays open while the
        broker confirms, the rows it did not confirm are unmarked, then it commits: a row is
        published-marked only with its confirm, and a failure rolls the whole batch back."""
        outbox = self.store.outbox.__table__
        # A Core connection, not an ORM session: 12% less of its CPU (the relay alone, 100 rows/s).
        with self.store.db.engine.begin() as conn:
            rows = sorted(conn.execute(self._claim, {"now": utcnow()}).all())
            if not rows:
                return 0
            confirmed = set(
                self.publisher.publish(
                    [
                        (
                            row.event_id,
                            routing_key(row.name, row.envelope.get("data")),
                            _json_bytes(row.envelope),
                        )
                        for row in rows
                    ]
                )
            )
            refused = [row.position for row in rows if row.event_id not in confirmed]
            if refused:
                conn.execute(
                    update(outbox).where(outbox.c.position.in_(refused)).values(published_at=None)
                )
        count = len(rows) - len(refused)
        self.published += count
        metrics.EVENTS_PUBLISHED.labels(self.store.service).inc(count)
        return count

    def purge_published(self) -> int:
        outbox = self.store.outbox
        with self.store.db.session() as session, session.begin():
            result = session.execute(
                delete(outbox).where(outbox.published_at < utcnow() - self.retention)
            )
        return result.rowcount

    def run(self) -> None:
        from shared.bus.publisher import BrokerUnavailable

        failures = 0
        next_purge = time.monotonic()
        last_rows = time.monotonic()  # when a look last found rows
        count = 0
        try:
            while not self.should_stop:
                self.last_beat = time.monotonic()
                try:
                    # While rows keep coming, the next batch is claimed without a look first
                    # (at 100 webhooks/s nearly every look found rows: a tenth of the relay's CPU).
                    count = self.relay_once() if count or self.anything_waiting() else 0
                    if time.monotonic() >= next_purge:
                        self.purge_published()
                        next_purge = time.monotonic() + 3600
                    failures, self.failing = 0, None
                except (BrokerUnavailable, sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
                    self.failing = type(exc).__name__
                    failures += 1
                    # At most 3 s apart: events reach consumers within seconds of the broker's or
                    # the database's return (a failed attempt costs one refused connection).
                    wait = backoff(failures, cap=3.0)
                    log.warning(
                        "relay %s: %s; retrying in %.1fs",
                        self.store.service,
                        str(exc).splitlines()[0][:200],
                        wait,
                    )
                    time.sleep(wait)
                    continue
                if count:
                    last_rows = time.monotonic()
                # Only after a full batch are the next rows claimed at once. After a shorter
                # one, those committed while it was out wait for the next look like any
                # others: claimed at once, at 100 webhooks/s nearly every other claim took
                # the one row that came in meanwhile (bench/pipeline.py: 133 of the ingest
                # relay's 304 batches held one row).
                if count < self.batch:
                    # Quiet for a while (a relay whose service rarely emits, or the night): it
                    # looks QUIET_SLOWER times less often. At 100 webhooks/s the cases and
                    # flowbridge relays spent 0.11 ms of CPU per webhook each on their 20
                    # looks a second; the first row after the quiet waits up to 0.25 s more.
                    quiet = time.monotonic() - last_rows >= QUIET_AFTER
                    self.publisher.idle(self.idle * (QUIET_SLOWER if quiet else 1))
        finally:
            self._close_look()
            self.publisher.close()


def _json_bytes(envelope: dict) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()

"""How the services use PostgreSQL: plans that stay index lookups while tables grow, and a
connection pool that a busy web process does not churn.

psycopg prepares a statement it has run five times, and PostgreSQL may then keep one generic
plan for it. Made while a service's tables were new (no statistics yet), such a plan looked the
inbox up by consumer alone and read every row of it: each batch's "which of these did I handle?"
grew with the inbox. Every connection now asks for a plan made with each execution's values.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid

import pytest
from sqlalchemy import event, func, insert, select, text

from shared.db import ROWS_PER_STATEMENT
from tests.support import Inbox, probe_store

pytestmark = pytest.mark.integration

CONSUMER = "probe.messages"


def index_tuples_read(session) -> int:
    """Index entries the current transaction read from the inbox's primary key so far."""
    return session.execute(
        text("SELECT pg_stat_get_xact_tuples_returned('inbox_pkey'::regclass)")
    ).scalar_one()


def handled_among(session, event_ids: list[str]) -> set[str]:
    """Which of these events the inbox has: the query's shape that once got a generic plan."""
    found = select(Inbox.event_id).where(Inbox.consumer == CONSUMER, Inbox.event_id.in_(event_ids))
    return set(session.scalars(found))


def test_the_inbox_check_reads_only_the_ids_asked_for_after_the_inbox_grew(pg_settings):
    store = probe_store(pg_settings)
    try:
        # One unit of work, so one connection throughout: the one whose prepared statement it is.
        with store.unit_of_work() as uow:
            session = uow.session
            wanted = [str(uuid.uuid4()) for _ in range(3)]
            for _ in range(15):  # prepared after 5, a generic plan considered after 5 more
                assert handled_among(session, wanted) == set()
            session.commit()
            session.execute(
                insert(Inbox),
                [{"consumer": CONSUMER, "event_id": str(uuid.uuid4())} for _ in range(20_000)],
            )
            session.commit()
            before = index_tuples_read(session)
            assert handled_among(session, wanted) == set()
            read = index_tuples_read(session) - before
            session.commit()
        assert read < 100, f"the inbox check read {read} index entries for 3 ids"
    finally:
        store.db.dispose()


def test_a_burst_on_every_thread_of_a_web_process_opens_no_new_connection(pg_settings):
    """Webhooks come in bursts: every thread of a gunicorn process busy at once, then idle. With a
    pool smaller than the threads, each burst opened connections beyond the pool and closed them
    when the threads went idle again: a new PostgreSQL backend per request past the pool's size."""
    settings = dataclasses.replace(pg_settings, web_threads=8)
    store = probe_store(settings)
    opened = []
    event.listen(store.db.engine, "connect", lambda *args: opened.append(1))
    together = threading.Barrier(settings.web_threads)

    def bursts():
        for _ in range(10):
            together.wait()  # all threads at once ...
            with store.db.session() as session:
                session.execute(text("SELECT pg_sleep(0.01)"))
                session.commit()
            together.wait()  # ... and all idle before the next burst

    threads = [threading.Thread(target=bursts) for _ in range(settings.web_threads)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(opened) <= settings.web_threads
    finally:
        store.db.dispose()


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_batch_claiming_an_event_another_holds_waits_for_its_end(pg_settings, first_commits):
    """Two replicas with the same event in their batch: the second's claim waits for the first
    transaction; it skips the event if that one committed, and takes it if it rolled back."""
    store = probe_store(pg_settings)
    event_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    claimed: dict[str, set[str]] = {}
    try:
        with store.unit_of_work() as first:
            assert first.claim(CONSUMER, [event_id, event_id]) == {event_id}

            def second() -> None:
                with store.unit_of_work() as uow:
                    claimed["second"] = uow.claim(CONSUMER, [event_id, other])
                    uow.commit()

            thread = threading.Thread(target=second)
            thread.start()
            thread.join(timeout=1)
            assert thread.is_alive(), "the second claim did not wait for the first transaction"
            if first_commits:
                first.commit()
            else:
                first.session.rollback()
        thread.join(timeout=10)
        assert claimed["second"] == ({other} if first_commits else {event_id, other})
    finally:
        store.db.dispose()


def test_a_batch_statement_is_parsed_once_not_at_every_execution(pg_settings):
    """A multi-row INSERT of a batch (here 30 rows of 3 columns: 90 parameters, over psycopg's
    own limit of 50) finds psycopg's parse of its text cached at its second execution
    (shared.db.cache_batch_statements): fails if psycopg stops honouring the limits we set."""
    from psycopg import _queries

    from shared.db import utcnow

    store = probe_store(pg_settings)
    try:
        rows = [
            {"consumer": CONSUMER, "event_id": str(uuid.uuid4()), "processed_at": utcnow()}
            for _ in range(30)
        ]
        statement = insert(Inbox).values(rows)  # one statement of 90 parameters
        with store.db.engine.begin() as conn:
            conn.execute(statement)
            before = _queries._query2pg.cache_info().hits
            rows = [{**row, "event_id": str(uuid.uuid4())} for row in rows]
            conn.execute(insert(Inbox).values(rows))
            assert _queries._query2pg.cache_info().hits == before + 1
    finally:
        store.db.engine.dispose()


def test_the_autocommit_pool_commits_each_statement_without_switching_its_connections(
    pg_settings, monkeypatch
):
    """The ingest's one-statement writes (shared/outbox.py) go through a pool whose connections
    stay in autocommit: what it ran is committed once it returns, with no switch into and out of
    autocommit each time the pool hands a connection out and takes it back; and PostgreSQL
    keeps a generic plan of such an INSERT instead of planning it at every execution."""
    store = probe_store(pg_settings)
    pool = store.db.autocommit
    calls: list[str] = []
    for name in ("set_isolation_level", "reset_isolation_level"):
        original = getattr(pool.dialect, name)

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(pool.dialect, name, spy)
    opened, backends = [], set()
    event.listen(pool, "connect", lambda *args: opened.append(1))
    event_ids = [str(uuid.uuid4()) for _ in range(20)]
    try:
        for event_id in event_ids:
            with pool.connect() as conn:
                conn.execute(insert(Inbox).values(consumer=CONSUMER, event_id=event_id))
                backends.add(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        with pool.connect() as conn:  # the one connection: psycopg prepared the INSERT
            generic = conn.exec_driver_sql(
                "SELECT generic_plans FROM pg_prepared_statements"
                " WHERE statement LIKE 'INSERT INTO inbox%%'"
            ).scalar_one()
        with store.db.session() as session:  # another connection, another pool
            assert handled_among(session, event_ids) == set(event_ids)
        assert len(opened) == 1 and len(backends) == 1
        assert generic > 0  # planned once, not at every execution
        assert calls.count("set_isolation_level") <= 1  # when it connected, not at each use
        assert calls.count("reset_isolation_level") == 0
    finally:
        store.db.dispose()


def test_rows_given_to_one_insert_reach_postgres_as_one_statement(pg_settings):
    """An ORM flush of new rows, and ``execute(insert, rows)``, send one multi-row INSERT, not
    one execution per row (psycopg's ``executemany``): PostgreSQL starts one statement, or one
    per ``ROWS_PER_STATEMENT`` rows."""
    store = probe_store(pg_settings)
    sent: list[str] = []
    event.listen(store.db.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    try:
        with store.db.session() as session:
            session.add_all(Inbox(consumer=CONSUMER, event_id=str(uuid.uuid4())) for _ in range(5))
            session.flush()
            session.execute(
                insert(Inbox),
                [{"consumer": CONSUMER, "event_id": str(uuid.uuid4())} for _ in range(5)],
            )
            inserts = [sql for sql in sent if sql.startswith("INSERT")]
            assert len(inserts) == 2 and all(sql.count("), (") == 4 for sql in inserts), inserts
            # A bulk write goes in statements of ROWS_PER_STATEMENT rows, which psycopg parses
            # once and prepares (SQLAlchemy's default pages of 1,000 rows were parsed each time).
            sent.clear()
            many = [{"consumer": CONSUMER, "event_id": str(uuid.uuid4())} for _ in range(120)]
            session.execute(insert(Inbox), many)
            rows_each = [sql.count("), (") + 1 for sql in sent if sql.startswith("INSERT")]
            assert rows_each == [ROWS_PER_STATEMENT, ROWS_PER_STATEMENT, 20], rows_each
            assert session.scalar(select(func.count()).select_from(Inbox)) == 130
    finally:
        store.db.dispose()

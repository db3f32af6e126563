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
from sqlalchemy import event, insert, text

from tests.support import Inbox, probe_store

pytestmark = pytest.mark.integration

CONSUMER = "probe.messages"


def index_tuples_read(session) -> int:
    """Index entries the current transaction read from the inbox's primary key so far."""
    return session.execute(
        text("SELECT pg_stat_get_xact_tuples_returned('inbox_pkey'::regclass)")
    ).scalar_one()


def test_the_inbox_check_reads_only_the_ids_asked_for_after_the_inbox_grew(pg_settings):
    store = probe_store(pg_settings)
    try:
        # One unit of work, so one connection throughout: the one whose prepared statement it is.
        with store.unit_of_work() as uow:
            session = uow.session
            wanted = [str(uuid.uuid4()) for _ in range(3)]
            for _ in range(15):  # prepared after 5, a generic plan considered after 5 more
                assert uow.processed_among(CONSUMER, wanted) == set()
            session.commit()
            session.execute(
                insert(Inbox),
                [{"consumer": CONSUMER, "event_id": str(uuid.uuid4())} for _ in range(20_000)],
            )
            session.commit()
            before = index_tuples_read(session)
            assert uow.processed_among(CONSUMER, wanted) == set()
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

"""Database plumbing every service shares: column types, engines, sessions and migrations.

Each service owns its tables. On PostgreSQL they live in the schema ``<namespace>_<service>``
(one database, one schema per service); on the embedded default in the SQLite file
``<data_dir>/<service>.db``. No service ever reads another service's tables.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from sqlalchemy import JSON, Connection, DateTime, Engine, String, create_engine, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from shared.settings import Settings

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")

# Reusable annotated column types for the typed models of every service.
uuid_pk = Annotated[str, mapped_column(String(36), primary_key=True, default=new_id)]
created_at = Annotated[datetime, mapped_column(UTCDateTime(), default=utcnow)]
utc_datetime = Annotated[datetime, mapped_column(UTCDateTime())]


def connection_options(schema: str, *, custom_plans: bool = True) -> str:
    """PostgreSQL settings of a connection: the service's schema first, and (``custom_plans``) a
    plan made for each execution's own values. psycopg prepares a statement run five times;
    PostgreSQL may then keep one generic plan for it, made while the service's tables were new
    and their statistics empty. Such a plan looked the inbox up by consumer alone and filtered
    every row of it by event id: a worker's batch check grew with the inbox (10 ms at 20,000
    rows) until the next ANALYZE. Planning these short statements each time costs a fraction of
    that. A statement with one possible plan (an INSERT of values) loses nothing to a generic
    one, and saves the planning: the ingest's write took 90 us of PostgreSQL's CPU to plan at
    each webhook (pg_stat_statements, bench/pipeline.py at 100/s)."""
    plans = "force_custom_plan" if custom_plans else "auto"
    return f"-csearch_path={schema} -cplan_cache_mode={plans}"


class Database:
    """The engine and session factory of one service."""

    def __init__(self, settings: Settings, service: str, *, pre_ping: bool = True) -> None:
        """``pre_ping``: check each connection with a round trip as the pool hands it out, so
        that a request after a database restart does not fail on a dead connection. Workers,
        relays and the ingest endpoint turn it off (a round trip per batch or per webhook):
        they retry what a dead connection failed, and the first such failure has the pool
        replace all of its connections."""
        self.service = service
        self.schema = f"{settings.namespace}_{service}"
        if settings.database_url:
            # Connections kept open: one per gunicorn thread. With fewer, a busy web process
            # opened and closed an overflow connection per request (a new PostgreSQL backend
            # each time). Workers and relays use one or two; a pool opens them only when asked.
            kept = max(5, settings.web_threads)
            cache_batch_statements()
            self._engine_options = {
                "pool_pre_ping": pre_ping,
                "pool_size": kept,
                "max_overflow": kept,
                "connect_args": {
                    "options": connection_options(self.schema),
                    "connect_timeout": 5,
                },
                "hide_parameters": True,  # errors end up in logs: keep message text and URNs out
                "insertmanyvalues_page_size": ROWS_PER_STATEMENT,
            }
            self.engine = create_engine(settings.database_url, **self._engine_options)
            rows_in_one_statement(self.engine)
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.engine = sqlite_engine(settings.data_dir / f"{service}.db")
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit: Engine | None = None

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        return self.sessions()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @property
    def autocommit(self) -> Engine:
        """PostgreSQL only: a pool of its own whose connections stay in autocommit, for work
        that is one statement, atomic by itself (the ingest's whole write, shared/outbox.py), and
        an INSERT of values: its connections let PostgreSQL keep a generic plan
        (``connection_options``), which is the one plan such a statement has.

        The same work on ``engine.connect().execution_options(isolation_level="AUTOCOMMIT")``
        switched the connection into autocommit as the pool handed it out and back as it took
        it back, and reset it with a rollback: 600-670 us of CPU a statement against 385 here
        (bench: the ingest's statement alone, 2,000 times; 210-230 us through psycopg itself).
        With nothing ever left open on these connections, the pool has nothing to reset. Its
        connections open only when used: in the services that use it, one or a few more per
        process."""
        if self._autocommit is None:
            if not self.is_postgres:
                raise RuntimeError("the autocommit pool is for PostgreSQL")
            options = {
                **self._engine_options,
                "connect_args": {
                    **self._engine_options["connect_args"],
                    "options": connection_options(self.schema, custom_plans=False),
                },
            }
            self._autocommit = create_engine(
                self.engine.url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, **options
            )
            rows_in_one_statement(self._autocommit)
        return self._autocommit

    def dispose(self) -> None:
        self.engine.dispose()
        if self._autocommit is not None:
            self._autocommit.dispose()

    def migrate(self, script_location: Path) -> None:
        """Bring this service's tables to the newest migration (safe to run from many processes)."""
        from alembic import command
        from alembic.config import Config

        with self.engine.begin() as conn:
            if self.is_postgres:
                # Several processes may start at once: one migrates, the others wait for it.
                lock_key = zlib.crc32(self.schema.encode())
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                conn.execute(text(f'SET LOCAL search_path TO "{self.schema}"'))
            config = Config()
            config.set_main_option("script_location", str(script_location))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def drop_schema(self) -> None:
        """Tests and `upartners db reset`: remove every table of this service."""
        if self.is_postgres:
            with self.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        else:
            path = Path(self.engine.url.database or "")
            self.engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def once_more_if_disconnected(work: Callable[[], T]) -> T:
    """``work()``, run a second time if it failed on a pooled connection that the database had
    closed (it restarted): that failure has the pool replace every connection it held, so the
    second run gets a live one. For work that is safe to repeat, on a pool without pre-ping."""
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return work()


def rows_in_one_statement(engine: Engine) -> None:
    """Several rows given to one INSERT (an ORM flush of new objects, ``execute(insert, rows)``)
    go to PostgreSQL as one multi-row INSERT, as those with RETURNING already did.

    SQLAlchemy's psycopg dialect otherwise hands them to psycopg's ``executemany``, which sends
    one execution per row (in a pipeline: one round trip, but PostgreSQL starts the statement
    anew for each row, and psycopg builds each one's messages in Python). A cases batch of five
    messages and their labels, bench/cases_worker.py with pg_stat_statements, alternating runs:
    11.5 and 11.2 ms of the worker's CPU before, 9.4 and 8.5 after; PostgreSQL's planning and
    execution 1,258 and 1,140 ms before, 1,018 and 901 after (300 batches). (psycopg2's dialect
    does this by default; it is a dialect attribute, not an engine argument.)

    A multi-row ``ON CONFLICT DO UPDATE`` may not name a row twice: the upserts passed several
    rows (the labeler's messages, the statistics' and folder counts) hold each key once."""
    engine.dialect.use_insertmanyvalues_wo_returning = True


# psycopg's own limits are 4,096 bytes and 50 parameters: these cover a batch of 50 rows of
# the widest table a worker writes (the cases service's messages: 20 columns), not the
# 2,000-row chunks of a rebuild or an import (parsed anew each time, as before).
CACHED_STATEMENT_LENGTH = 64 * 1024
CACHED_STATEMENT_PARAMS = 1_000
# Rows in one multi-row INSERT (``rows_in_one_statement``): a worker's batch in one statement,
# and a bulk write of thousands of rows (an import, a rebuild) in statements that stay within
# the limits above, parsed once and prepared, rather than SQLAlchemy's default of 1,000 rows.
ROWS_PER_STATEMENT = 50


def cache_batch_statements() -> None:
    """Let psycopg keep its parse of a batch's statements, as it does of short ones.

    psycopg turns each statement's ``%(name)s`` placeholders into PostgreSQL's ``$n`` with a
    regular expression and keeps the result for the next execution of the same text, but only
    for statements of at most 4,096 bytes and 50 parameters (ORMs make too many shapes of
    longer ones: psycopg discussion #628). A worker's multi-row INSERTs (SQLAlchemy's
    insertmanyvalues: five messages are 80 parameters) and IN lists of a batch's ids were parsed
    again at every execution. Ours come in few shapes, one per row count up to the batch size,
    and the cache keeps the 128 most recently used. bench/cases_worker.py, alternating runs: a
    batch of 50 took 16.0 and 16.9 ms of CPU before, 15.1 and 15.7 after; a batch of 5, 5.5 and
    5.8 before, 5.2 and 5.6 after.

    The limits are module constants of ``psycopg._queries``, not a documented setting: the
    test that checks they are honoured fails if an upgrade of psycopg renames them."""
    from psycopg import _queries

    _queries.MAX_CACHED_STATEMENT_LENGTH = max(
        _queries.MAX_CACHED_STATEMENT_LENGTH, CACHED_STATEMENT_LENGTH
    )
    _queries.MAX_CACHED_STATEMENT_PARAMS = max(
        _queries.MAX_CACHED_STATEMENT_PARAMS, CACHED_STATEMENT_PARAMS
    )


def sqlite_engine(path: Path) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": 30},
        hide_parameters=True,  # errors end up in logs: keep message text and URNs out
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below); pysqlite's implicit transactions would not lock early.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # an accepted webhook survives a power cut
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: threads of one process then queue on busy_timeout
        # instead of failing with "database is locked" when a read turns into a write.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def run_migrations(context: Any, metadata: Any) -> None:
    """Body of every service's Alembic ``env.py``: migrate on the connection we were handed."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `upartners db upgrade`, which passes a connection")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def insert_statement(executor: Session | Connection, model: Any) -> Any:
    """The dialect's INSERT, which offers ``on_conflict_do_nothing`` on PostgreSQL and SQLite
    (``executor``: a session or a connection)."""
    return dialect_insert(dialect_name(executor))(model)


def dialect_name(executor: Session | Connection) -> str:
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    return bind.dialect.name


def dialect_insert(dialect: str) -> Callable[[Any], Any]:
    """The INSERT construct of a dialect by name (``postgresql`` or ``sqlite``).

    A statement run often is best built once per dialect (``functools.cache`` on a function of
    the name) with its rows passed as parameters: SQLAlchemy then finds its compiled form in its
    cache, where a statement built anew, above all with ``.values([...])`` rows, is compiled
    again at every call (bench/cases_worker.py: with the cases worker's statements built
    once, its batch of five took 9.0 and 9.2 ms of CPU, against 13.3 and 12.0 before)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert

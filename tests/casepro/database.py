"""A fresh CasePro database on a PostgreSQL server: created, given tests/casepro/schema.sql,
filled by tests/casepro/fixture.py, dropped.

    python -m tests.casepro.database postgresql://postgres@127.0.0.1:5432/postgres casepro_bench \\
        --messages 1000000 --cases 100000

makes a benchmark's database (it replaces one of that name).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.casepro.fixture import Manifest, Size, fill

SCHEMA = Path(__file__).with_name("schema.sql")
EXTENSION = "CREATE EXTENSION IF NOT EXISTS hstore;"
AFTER_LOAD = "-- AFTER LOAD"


def plain_url(url: str) -> str:
    """A libpq URL, from a SQLAlchemy one as well."""
    scheme, rest = url.split("://", 1)
    return ("postgresql" if scheme.startswith("postgresql") else scheme) + "://" + rest


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    parts = urlsplit(plain_url(server_url))
    return urlunsplit(parts._replace(path="/" + name))


def create_database(server_url: str, name: str) -> str:
    """A new empty database ``name`` (one of that name is dropped first); its URL."""
    drop_database(server_url, name)
    with psycopg.connect(plain_url(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(plain_url(server_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def schema_parts(hstore: bool) -> tuple[str, str]:
    """The schema's tables, and what comes after the load; with jsonb for hstore if need be."""
    text = SCHEMA.read_text().replace(EXTENSION, "")
    if not hstore:
        text = text.replace(" hstore,", " jsonb,")
    tables, after = text.split(AFTER_LOAD, 1)
    return tables, after


def create_hstore(conn: psycopg.Connection) -> bool:
    """Whether the hstore extension is (now) in the database; False where it is not installed
    on the server, or the user may not create it."""
    try:
        with conn.transaction():
            conn.execute(EXTENSION)
        return True
    except psycopg.Error:
        return False


def load(url: str, size: Size | None = None, *, hstore: bool = True) -> Manifest:
    """Schema and fixture into the (empty) database at ``url``, in one transaction. Contacts'
    fields are an hstore if the extension can be had (and ``hstore`` is True), else jsonb."""
    with psycopg.connect(plain_url(url), autocommit=True) as conn:
        hstore = hstore and create_hstore(conn)
        tables, after = schema_parts(hstore)
        with conn.transaction():
            conn.execute(tables)
            manifest = fill(conn, size or Size(), hstore=hstore)
            conn.execute(after)
            names = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
            for (table,) in names:
                conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({name}, 'id'), "
                        "COALESCE(max(id), 1), max(id) IS NOT NULL) FROM {table}"
                    ).format(name=sql.Literal(table), table=sql.Identifier(table))
                )
        conn.execute("ANALYZE")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description="Make a CasePro test database.")
    parser.add_argument("server_url", help="a database URL on the server, e.g. .../postgres")
    parser.add_argument("name", help="the database to (re)create")
    parser.add_argument("--messages", type=int, default=Size.messages)
    parser.add_argument("--cases", type=int, default=Size.cases)
    parser.add_argument("--contacts", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    url = create_database(args.server_url, args.name)
    manifest = load(url, Size(messages=args.messages, cases=args.cases, contacts=args.contacts))
    took = time.monotonic() - started
    print(f"{url}: org {manifest.org_id} ({manifest.subdomain}), {dict(manifest.counts)}")
    print(f"made in {took:.1f} s")


if __name__ == "__main__":
    main()

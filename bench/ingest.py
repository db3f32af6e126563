"""Benchmark of the ingest service: gunicorn on PostgreSQL, driven from a separate process.

Prints accepted webhooks/s and latency percentiles at full speed and at a fixed rate, next to two
anchors under the same gunicorn settings in the same run: a bare Flask endpoint, and a *durable*
one that inserts the raw body into one PostgreSQL table and commits before answering
(bench/durable_app.py: what any receiver must do that never answers 2xx before a commit). Issue
17's target: ingest at full speed at least 70% of the durable anchor. A relay publishes the
outbox to RabbitMQ meanwhile, as in production (--no-relay to leave it out).

    .venv/bin/python bench/ingest.py [--seconds 10] [--rate 200]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.durable_app import SCHEMA_SUFFIX, table  # noqa: E402

DATABASE_URL = os.environ.get(
    "UPARTNERS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BROKER_URL = os.environ.get("UPARTNERS_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PLAIN_URL = DATABASE_URL.replace("postgresql+psycopg://", "postgresql://")
ORG = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not start")


def gunicorn(app: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(REPO / "deploy/gunicorn/ingest.py"),
            "--bind",
            f"127.0.0.1:{port}",
            "--error-logfile",
            "/dev/null",
            app,
        ],
        cwd=REPO,
        env=env,
    )
    wait_until_up(port, process)
    return process


def webhook_body(template: dict, i: int) -> bytes:
    body = json.loads(json.dumps(template))
    body["input"]["uuid"] = str(uuid.UUID(int=i + 1))
    body["input"]["text"] = f"{body['input']['text']} #{i}"
    return json.dumps(body).encode()


def drive(url: str, headers: dict, rate: float | None, seconds: float, offset: int):
    template = json.loads((REPO / "tests/fixtures/webhooks/resthook.json").read_text())
    return loadgen.run(
        url, lambda i: webhook_body(template, offset + i), headers, rate=rate, seconds=seconds
    )


def in_other_process(*args):
    """The load comes from a separate process, so the client does not share the GIL."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(drive, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--no-relay", action="store_true")
    args = parser.parse_args()

    from services.ingest import handlers
    from services.ingest.models import open_store
    from services.registry import migrate
    from shared.settings import Settings

    namespace = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(database_url=DATABASE_URL, broker_url=BROKER_URL, namespace=namespace)
    migrate(settings, ("ingest",))
    store = open_store(settings)
    _, secret = handlers.add_secret(store, ORG)
    env = {
        **os.environ,
        "UPARTNERS_DATABASE_URL": DATABASE_URL,
        "UPARTNERS_BROKER_URL": BROKER_URL,
        "UPARTNERS_NAMESPACE": namespace,
        "UPARTNERS_LOG_LEVEL": "WARNING",
    }
    durable_table = table(namespace)
    with psycopg.connect(PLAIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{namespace}{SCHEMA_SUFFIX}"')
        conn.execute(f"CREATE TABLE {durable_table} (id bigserial PRIMARY KEY, body bytea)")
    ingest_port, bare_port, durable_port = free_port(), free_port(), free_port()
    processes = [
        gunicorn("services.ingest.app:create_app()", ingest_port, env),
        gunicorn("bench.bare_app:create_app()", bare_port, env),
        gunicorn("bench.durable_app:create_app()", durable_port, env),
    ]
    if not args.no_relay:
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.cli", "relay", "ingest"], cwd=REPO, env=env
            )
        )
    headers = {
        "Authorization": f"Token {secret}",
        "Content-Type": "application/json",
        "User-Agent": "Mailroom/9.3.0",
    }
    ingest_url = f"http://127.0.0.1:{ingest_port}/webhooks/{ORG}/flow"
    bare_url = f"http://127.0.0.1:{bare_port}/webhooks/{ORG}/flow"
    durable_url = f"http://127.0.0.1:{durable_port}/webhooks/{ORG}/flow"
    try:
        in_other_process(ingest_url, headers, None, 2, 10_000_000)  # warm up
        results = [
            ("bare Flask, full speed", in_other_process(bare_url, headers, None, args.seconds, 0)),
            (
                "durable Flask (INSERT + commit), full speed",
                in_other_process(durable_url, headers, None, args.seconds, 0),
            ),
            (
                "ingest, full speed",
                in_other_process(ingest_url, headers, None, args.seconds, 20_000_000),
            ),
            (
                f"bare Flask, {args.rate:.0f}/s",
                in_other_process(bare_url, headers, args.rate, args.seconds, 0),
            ),
            (
                f"ingest, {args.rate:.0f}/s",
                in_other_process(ingest_url, headers, args.rate, args.seconds, 30_000_000),
            ),
        ]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        store.db.drop_schema()
        store.db.dispose()
        with psycopg.connect(PLAIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}{SCHEMA_SUFFIX}" CASCADE')
        from shared.bus.connection import delete_topology

        delete_topology(settings)
    print(
        f"\ningest benchmark: {os.cpu_count()} cores, gunicorn gthread "
        f"{env.get('UPARTNERS_WEB_WORKERS', os.cpu_count())} workers x "
        f"{env.get('UPARTNERS_WEB_THREADS', 8)} threads, PostgreSQL, "
        f"relay {'off' if args.no_relay else 'on'}, {args.seconds:.0f} s per run"
    )
    for label, result in results:
        print(result.line(label))
    bare, durable, ingest = (result.rate for _, result in results[:3])
    print(f"ingest / bare at full speed: {ingest / bare:.2f}")
    print(f"ingest / durable at full speed: {ingest / durable:.2f} (target: at least 0.70)")


if __name__ == "__main__":
    main()

"""The durable baseline of bench/ingest.py: a Flask endpoint that inserts the raw body into one
PostgreSQL table and commits before it answers, as any receiver must that never says 2xx before
its data is safe. No parsing, no credentials, no outbox: the least such a receiver can do.

It reads ``UPARTNERS_DATABASE_URL`` and ``UPARTNERS_NAMESPACE``; the benchmark creates the table
``<namespace>_durable.bodies`` first. One connection per gunicorn thread, autocommit: each
INSERT is its own transaction, committed (synchronous_commit as the server has it).
"""

import os
import threading

import psycopg
from flask import Flask, jsonify, request

SCHEMA_SUFFIX = "_durable"


def table(namespace: str) -> str:
    return f'"{namespace}{SCHEMA_SUFFIX}".bodies'


def create_app() -> Flask:
    url = os.environ["UPARTNERS_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    insert = f"INSERT INTO {table(os.environ['UPARTNERS_NAMESPACE'])} (body) VALUES (%s)"
    local = threading.local()
    app = Flask(__name__)

    @app.post("/webhooks/<org>/flow")
    def accept(org: str):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(url, autocommit=True)
        conn.execute(insert, (request.get_data(),))
        return jsonify({"status": "accepted", "message": "0"})

    return app

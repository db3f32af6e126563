"""Fixtures shared by the three test tiers.

Unit tests run on SQLite files and the embedded bus in a temporary folder. Integration and
end-to-end tests use the real PostgreSQL and RabbitMQ of the machine, each test in its own
namespace (its own schemas and queues), removed afterwards. Where those servers are missing a
test skips locally, but fails in CI (CI=true): a skipped integration test proves nothing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from shared.settings import Settings

TEST_DATABASE_URL = os.environ.get(
    "UPARTNERS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_BROKER_URL = os.environ.get(
    "UPARTNERS_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"
)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or default_port), 2):
            return True
    except OSError:
        return False


def require(url: str, default_port: int, what: str) -> None:
    if _reachable(url, default_port):
        return
    message = f"{what} is not reachable at {urlparse(url).hostname}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: integration tests must run in CI")
    pytest.skip(message)


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(tmp_path, namespace) -> Settings:
    """The embedded default: SQLite files and the embedded bus in a fresh folder."""
    return Settings(data_dir=tmp_path / "data", namespace=namespace, relay_idle=0.01)


@pytest.fixture
def pg_settings(tmp_path, namespace) -> Iterator[Settings]:
    """Real PostgreSQL and RabbitMQ, isolated by namespace; cleaned up after the test."""
    require(TEST_DATABASE_URL, 5432, "PostgreSQL")
    require(TEST_BROKER_URL, 5672, "RabbitMQ")
    settings = Settings(
        database_url=TEST_DATABASE_URL,
        broker_url=TEST_BROKER_URL,
        data_dir=tmp_path / "data",
        namespace=namespace,
        relay_idle=0.01,
        delivery_limit=5,
    )
    yield settings
    _drop_namespace(settings)


def _drop_namespace(settings: Settings) -> None:
    import sqlalchemy as sa
    from kombu import Connection

    from shared.bus import topology

    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        schemas = conn.execute(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
            {"p": f"{settings.namespace}\\_%"},
        ).scalars()
        for schema in list(schemas):
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()
    try:
        with Connection(settings.broker_url, connect_timeout=5) as connection:
            channel = connection.channel()
            for spec in topology.QUEUES:
                name = spec.name(settings.namespace)
                for queue in (name, topology.dlq_name(name)):
                    channel.queue_delete(queue)
            channel.exchange_delete(topology.exchange_name(settings.namespace))
            channel.exchange_delete(topology.dead_letter_exchange(settings.namespace))
    except Exception:  # the broker may be down after a failed fault test; nothing to clean then
        pass

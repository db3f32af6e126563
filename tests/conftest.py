"""Fixtures shared by the three test tiers.

Unit tests run on SQLite files and the embedded bus in a temporary folder. Integration and
end-to-end tests use the real PostgreSQL and RabbitMQ of the machine, each test in its own
namespace (its own schemas and queues), removed afterwards. Where those servers are missing a
test skips locally, but fails in CI (CI=true): a skipped integration test proves nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from services.stack import drop_namespace
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


USED_NAMESPACES: set[str] = set()


@pytest.fixture
def namespace() -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    USED_NAMESPACES.add(name)
    return name


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
    drop_namespace(settings)


@pytest.fixture(scope="session", autouse=True)
def sweep_test_queues():
    """After the session, delete any queue a test namespace left behind (a test's own probe
    queues, or a cleanup cut short), so repeated runs do not pile quorum queues up."""
    yield
    if not USED_NAMESPACES or shutil.which("rabbitmqctl") is None:
        return
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "name"], capture_output=True, text=True, timeout=60
    )
    leftovers = [name for name in listed.stdout.split() if name.split(".", 1)[0] in USED_NAMESPACES]
    if not leftovers:
        return
    from kombu import Connection

    with Connection(TEST_BROKER_URL, connect_timeout=5) as connection:
        channel = connection.channel()
        for name in leftovers:
            channel.queue_delete(name)

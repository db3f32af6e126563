"""Fault-test fixtures: a private PostgreSQL cluster and a private RabbitMQ node for the session,
a fresh namespace on them and the product's processes for each test.

The fault tests stop and kill their servers; the machine's shared servers keep serving the other
tests meanwhile (and the rest of the suite in CI), so they are never touched here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from services.stack import drop_namespace
from shared.settings import Settings
from tests.fault.pipeline import World, open_world
from tests.fault.servers import KEEP, PrivatePostgres, PrivateRabbit, answers


def _unavailable(what: str) -> None:
    message = f"{what} is not installed: the fault tests need their own server"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    if not PrivatePostgres.available():
        _unavailable("PostgreSQL")
    server = PrivatePostgres()
    try:
        server.init()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def private_rabbit() -> Iterator[PrivateRabbit]:
    if not PrivateRabbit.available():
        _unavailable("RabbitMQ")
    server = PrivateRabbit()
    try:
        server.init()
        yield server
    finally:
        server.close()


@pytest.fixture
def fault_settings(private_postgres, private_rabbit, tmp_path) -> Iterator[Settings]:
    """A fresh namespace on the private servers; both are running again when a test begins."""
    if not private_postgres.running:
        private_postgres.start()
    if private_rabbit.pid() is None:
        private_rabbit.start()
    elif not answers(private_rabbit.port):
        private_rabbit.start_app()  # a test stopped the app and failed before starting it
    settings = Settings(
        database_url=private_postgres.url,
        broker_url=private_rabbit.url,
        data_dir=tmp_path / "data",
        namespace=f"f{uuid.uuid4().hex[:10]}",
        relay_idle=0.01,
        delivery_limit=5,
    )
    yield settings
    if not KEEP:  # kept for a post-mortem along with the servers' folders
        drop_namespace(settings)


@pytest.fixture
def world(fault_settings, tmp_path) -> Iterator[World]:
    """The stack (ingest, labeler, cases: web processes, workers, relays) with an org, its
    webhook secret and a label every test webhook matches. Logs in tmp_path/logs."""
    world = open_world(fault_settings, tmp_path / "logs")
    try:
        yield world
    finally:
        world.close()

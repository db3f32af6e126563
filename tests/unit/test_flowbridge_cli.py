"""`upartners flowbridge connect|sync`: the token is checked, stored, and never printed."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from fakes.rapidpro import create_app
from services.cli import main
from services.flowbridge.models import open_store
from shared.settings import Settings
from tests.fakes_server import FakeControl, serve_app
from tests.flowbridge_helpers import ORG, TOKEN, workspace_spec


@pytest.fixture
def env(tmp_path, monkeypatch, namespace):
    for name in ("UPARTNERS_DATABASE_URL", "UPARTNERS_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UPARTNERS_NAMESPACE", namespace)
    with serve_app(create_app()) as url:
        FakeControl(url).create_workspace(workspace_spec())
        yield url, Settings.from_env()


def catalog_events(settings):
    store = open_store(settings)
    try:
        with store.db.session() as session:
            return session.scalars(
                select(store.outbox.name).where(store.outbox.name == "catalog.synced")
            ).all()
    finally:
        store.db.dispose()


def test_connect_then_sync(env, capsys):
    url, settings = env
    assert main(["flowbridge", "connect", "--org", ORG, "--url", url, "--token", TOKEN]) == 0
    assert main(["flowbridge", "sync", "--org", ORG]) == 0

    out = capsys.readouterr().out
    assert "3 groups, 2 flows" in out
    assert TOKEN not in out
    assert len(catalog_events(settings)) == 2


def test_the_token_can_come_from_stdin(env, capsys, monkeypatch):
    url, _ = env
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{TOKEN}\n"))
    assert main(["flowbridge", "connect", "--org", ORG, "--url", url, "--token", "-"]) == 0
    assert TOKEN not in capsys.readouterr().out


def test_a_refused_token_or_an_unknown_org_fails_cleanly(env, capsys):
    url, settings = env
    assert main(["flowbridge", "connect", "--org", ORG, "--url", url, "--token", "nope"]) == 1
    assert main(["flowbridge", "sync", "--org", ORG]) == 1  # nothing was stored
    assert main(["flowbridge", "connect", "--org", "Bad Org", "--url", url, "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert "refused the API token" in err and "no flow engine connection" in err
    assert "nope" not in err
    assert catalog_events(settings) == []

"""Building an ingest app with a known webhook secret, and reading what it stored."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

from sqlalchemy import func, select

from services.ingest import handlers
from services.ingest.app import create_app
from services.ingest.models import MIGRATIONS, Message, Outbox, open_store
from shared.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
ORG = "unicef-br"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def make_ingest(settings: Settings):
    """An ingest app on migrated tables, with one secret for ORG; returns (app, store, secret)."""
    settings = settings.with_(secret_cache_ttl=0)  # tests revoke and expect it at once
    store = open_store(settings, pre_ping=False)  # as the ingest's composition root has it
    store.db.migrate(MIGRATIONS)
    _, secret = handlers.add_secret(store, ORG)
    return create_app(settings, store), store, secret


def counts(store) -> tuple[int, int]:
    """(messages, outbox rows) stored."""
    with store.db.session() as session:
        messages = session.scalar(select(func.count()).select_from(Message))
        events = session.scalar(select(func.count()).select_from(Outbox))
    return messages, events


def signed_headers(secret: str, body: bytes, delivery: str = "d-1", at: float | None = None):
    timestamp = str(int(at if at is not None else time.time()))
    key = hashlib.sha256(secret.encode()).hexdigest()
    digest = hmac.new(key.encode(), f"{timestamp}.{delivery}.".encode() + body, hashlib.sha256)
    return {
        "X-UPartners-Timestamp": timestamp,
        "X-UPartners-Delivery": delivery,
        "X-UPartners-Signature": f"sha256={digest.hexdigest()}",
    }

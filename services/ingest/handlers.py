"""The ingest service layer: check a delivery's credentials, accept a webhook, manage secrets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from services.ingest.domain import InboundMessage
from services.ingest.models import Message, WebhookSecret
from shared import auth
from shared.db import new_id, utcnow
from shared.events import MESSAGE_RECEIVED, new_event
from shared.orgs import is_org_key
from shared.outbox import insert_with_event
from shared.uow import ServiceStore


@dataclass(frozen=True)
class Credentials:
    """What a delivery presented: a static token, or a signature with its timestamp and id."""

    token: str | None = None
    signature: str | None = None
    timestamp: str | None = None
    delivery_id: str | None = None


@dataclass(frozen=True)
class Accepted:
    message_id: str
    duplicate: bool


class SecretCache:
    """Each org's valid secret hashes, read again after ``ttl`` seconds.

    Saves a database round trip on every webhook; a revoked secret stops working within ``ttl``.
    """

    def __init__(self, store: ServiceStore, ttl: float = 5.0) -> None:
        self.store = store
        self.ttl = ttl
        self._entries: dict[str, tuple[float, tuple[str, ...]]] = {}

    def hashes(self, org: str) -> tuple[str, ...]:
        now = time.monotonic()
        entry = self._entries.get(org)
        if entry is not None and entry[0] > now:
            return entry[1]
        with self.store.unit_of_work() as uow:
            hashes = tuple(
                uow.session.scalars(
                    select(WebhookSecret.secret_hash).where(
                        WebhookSecret.org == org, WebhookSecret.revoked_at.is_(None)
                    )
                )
            )
        if len(self._entries) > 10_000:  # unknown org keys must not grow it without bound
            self._entries.clear()
        self._entries[org] = (now + self.ttl, hashes)
        return hashes


def authenticate(
    secrets: SecretCache, org: str, credentials: Credentials, body: bytes, *, window: int
) -> bool:
    """True if the delivery carries a valid, unrevoked credential of the org. Reads only."""
    if not is_org_key(org):
        return False
    hashes = secrets.hashes(org)
    if not hashes:
        return False
    if credentials.signature is not None:
        return auth.signature_matches(
            hashes,
            timestamp=credentials.timestamp or "",
            delivery_id=credentials.delivery_id or "",
            body=body,
            presented=credentials.signature,
            now=time.time(),
            window=window,
        )
    return credentials.token is not None and auth.token_matches(credentials.token, hashes)


def accept_webhook(
    store: ServiceStore,
    org: str,
    inbound: InboundMessage,
    raw_body: bytes,
    *,
    simulation: bool,
    received_at: datetime | None = None,
) -> Accepted:
    """Store the message and its ``message.received`` event together, exactly once (one
    statement on PostgreSQL: shared/outbox.py ``insert_with_event``).

    A repeated delivery (same idempotency key) finds the first one and gets the same answer.
    """
    key = inbound.idempotency_key(raw_body)
    message_id = new_id()
    received_at = received_at or utcnow()
    event = new_event(
        MESSAGE_RECEIVED,
        org=org,
        producer=store.service,
        data=message_received_data(message_id, inbound, simulation, received_at),
        correlation_id=message_id,
    )
    row = {
        "id": message_id,
        "org": org,
        "idempotency_key": key,
        "shape": inbound.shape,
        "contact_uuid": inbound.contact_uuid,
        "urn": inbound.urn,
        "contact_name": inbound.contact_name,
        "flow_uuid": inbound.flow_uuid,
        "node_uuid": inbound.node_uuid,
        "run_uuid": inbound.run_uuid,
        "external_id": inbound.input_uuid,
        "text": inbound.text,
        "simulation": simulation,
        "received_at": received_at,
    }
    table = Message.__table__
    unique = ("org", "idempotency_key")
    if insert_with_event(store.db, table, row, unique=unique, outbox=store.outbox, event=event):
        return Accepted(message_id=message_id, duplicate=False)
    with store.db.engine.connect() as conn:  # a repeated delivery: the first one's id
        existing = conn.scalar(
            select(Message.id).where(Message.org == org, Message.idempotency_key == key)
        )
    return Accepted(message_id=existing, duplicate=True)


def message_received_data(
    message_id: str, inbound: InboundMessage, simulation: bool, received_at: datetime
) -> dict:
    """What labeler and cases need to know; the URN and the contact's name are left out."""
    return {
        "message_id": message_id,
        "contact_uuid": inbound.contact_uuid,
        "contact_groups": [{"uuid": g.uuid, "name": g.name} for g in inbound.groups],
        "contact_fields": dict(inbound.fields),
        "language": inbound.language,
        "flow_uuid": inbound.flow_uuid,
        "flow_name": inbound.flow_name,
        "node_uuid": inbound.node_uuid,
        "run_uuid": inbound.run_uuid,
        "external_id": inbound.input_uuid,
        "text": inbound.text,
        "attachments": [
            {"content_type": a.content_type, "url": a.url} for a in inbound.attachments
        ],
        "channel": (
            {"uuid": inbound.channel.uuid, "name": inbound.channel.name}
            if inbound.channel
            else None
        ),
        "received_at": received_at.isoformat(),
        "sent_on": inbound.sent_on.isoformat() if inbound.sent_on else None,
        "simulation": simulation,
    }


# --- secrets (CLI) ------------------------------------------------------------------------------
def add_secret(store: ServiceStore, org: str) -> tuple[str, str]:
    """Create a webhook secret for the org; returns (id, secret). The secret is shown once."""
    if not is_org_key(org):
        raise ValueError("an org key is 1-64 lowercase letters, digits, '-' or '_'")
    secret = auth.new_secret()
    with store.unit_of_work() as uow:
        row = WebhookSecret(id=new_id(), org=org, secret_hash=auth.hash_secret(secret))
        uow.session.add(row)
        uow.commit()
    return row.id, secret


def list_secrets(store: ServiceStore, org: str) -> list[WebhookSecret]:
    with store.unit_of_work() as uow:
        return list(
            uow.session.scalars(
                select(WebhookSecret)
                .where(WebhookSecret.org == org)
                .order_by(WebhookSecret.created_at)
            )
        )


def revoke_secret(store: ServiceStore, org: str, secret_id: str) -> bool:
    with store.unit_of_work() as uow:
        row = uow.session.get(WebhookSecret, secret_id)
        if row is None or row.org != org or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        uow.commit()
    return True

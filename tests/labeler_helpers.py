"""Factories for the labeler's events."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from shared import events as ev
from shared.events import Envelope, new_event

ORG = "unicef-br"
FLOW = "7014582e-489a-4049-a03a-d443fa07c6ff"
NODE = "8d9c4bd3-6593-4460-8a15-74230fb4b368"
_versions = itertools.count(1)


def label_event(
    name: str,
    rule: list[dict[str, Any]],
    *,
    label_uuid: str | None = None,
    synced: bool = False,
    active: bool = True,
    version: int | None = None,
    event: str = ev.LABEL_CREATED,
    org: str = ORG,
) -> Envelope:
    return new_event(
        event,
        org=org,
        producer="cases",
        data={
            "label_uuid": label_uuid or str(uuid.uuid4()),
            "name": name,
            "synced": synced,
            "active": active,
            "rule": rule,
            "label_version": version or next(_versions),
        },
    )


def label_deleted(label_uuid: str, version: int, org: str = ORG) -> Envelope:
    return new_event(
        ev.LABEL_DELETED,
        org=org,
        producer="cases",
        data={"label_uuid": label_uuid, "label_version": version},
    )


def message_received(
    text: str | None = "preciso de ajuda",
    *,
    groups: tuple[str, ...] = (),
    fields: dict[str, str | None] | None = None,
    node: str | None = NODE,
    received_at: str = "2026-11-20T10:00:00.000000+00:00",
    simulation: bool = False,
    org: str = ORG,
) -> Envelope:
    return new_event(
        ev.MESSAGE_RECEIVED,
        org=org,
        producer="ingest",
        data={
            "message_id": str(uuid.uuid4()),
            "contact_uuid": str(uuid.uuid4()),
            "contact_groups": [{"uuid": g, "name": None} for g in groups],
            "contact_fields": fields or {},
            "flow_uuid": FLOW,
            "node_uuid": node,
            "external_id": str(uuid.uuid4()),
            "text": text,
            "received_at": received_at,
            "simulation": simulation,
        },
    )


def keywords(*words: str, quantifier: str = "any") -> dict[str, Any]:
    return {"type": "keywords", "quantifier": quantifier, "keywords": list(words)}


def step(flow: str = FLOW, node: str = NODE) -> dict[str, Any]:
    return {"type": "step", "steps": [{"flow": flow, "node": node}]}


def in_groups(*group_uuids: str) -> dict[str, Any]:
    return {"type": "groups", "quantifier": "any", "groups": list(group_uuids)}

"""How the fake writes its records as JSON: the API v2 shape of each record (the ``*_json``
functions), the control endpoints' workspace summary and full state, and JSON responses.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from flask import Response

from .state import Broadcast, Contact, Fault, Flow, FlowStart, Group, Label, Message, Workspace


def mask_urn(ws: Workspace, urn: str) -> str:
    return f"{urn.partition(':')[0]}:********" if ws.anon else urn


def ref_json(item: Any) -> dict[str, Any]:
    return {"uuid": item.uuid, "name": item.name}


def contact_groups(ws: Workspace, contact: Contact) -> list[Group]:
    return sorted((g for g in ws.groups.values() if contact.uuid in g.members), key=lambda g: g.seq)


def contact_json(ws: Workspace, contact: Contact) -> dict[str, Any]:
    flow = ws.flows.get(contact.flow) if contact.flow else None
    return {
        "uuid": contact.uuid,
        "name": contact.name,
        "status": contact.status,
        "language": contact.language,
        "urns": [mask_urn(ws, urn) for urn in contact.urns],
        "groups": [ref_json(g) for g in contact_groups(ws, contact)],
        "fields": dict(contact.fields),
        "flow": ref_json(flow) if flow else None,
        "created_on": contact.created_on,
        "modified_on": contact.modified_on,
        "last_seen_on": contact.last_seen_on,
    }


def group_json(ws: Workspace, group: Group) -> dict[str, Any]:
    return {
        "uuid": group.uuid,
        "name": group.name,
        "query": group.query,
        "status": "ready",
        "system": False,
        "count": len(group.members),
    }


def flow_json(ws: Workspace, flow: Flow) -> dict[str, Any]:
    runs = ("active", "waiting", "completed", "interrupted", "expired", "failed")
    return {
        "uuid": flow.uuid,
        "name": flow.name,
        "type": flow.type,
        "archived": flow.archived,
        "labels": [],
        "expires": 10080,
        "runs": dict.fromkeys(runs, 0),
        "results": [],
        "parent_refs": [],
        "created_on": flow.created_on,
        "modified_on": flow.created_on,
    }


def label_json(ws: Workspace, label: Label) -> dict[str, Any]:
    count = sum(
        1 for m in ws.messages.values() if label.uuid in m.labels and m.visibility != "deleted"
    )
    return {"uuid": label.uuid, "name": label.name, "count": count}


def message_json(ws: Workspace, message: Message) -> dict[str, Any]:
    contact = ws.contacts.get(message.contact)
    flow = ws.flows.get(message.flow) if message.flow else None
    return {
        "id": message.id,
        "uuid": message.uuid,
        "broadcast": message.broadcast,
        "contact": {"uuid": message.contact, "name": contact.name if contact else None},
        "urn": None if ws.anon or message.urn is None else message.urn,
        "channel": {"uuid": ws.channel["uuid"], "name": ws.channel["name"]}
        if message.urn
        else None,
        "direction": message.direction,
        "type": "text",
        "status": message.status,
        "archived": message.visibility == "archived",
        "visibility": message.visibility,
        "text": message.text,
        "labels": [ref_json(ws.labels[u]) for u in message.labels if u in ws.labels],
        "attachments": [
            {"content_type": a.partition(":")[0], "url": a.partition(":")[2]}
            for a in message.attachments
        ],
        "quick_replies": [],
        "flow": ref_json(flow) if flow else None,
        "created_on": message.created_on,
        "sent_on": message.sent_on,
        "modified_on": message.modified_on,
        "media": message.attachments[0] if message.attachments else None,
    }


def flow_start_json(ws: Workspace, start: FlowStart) -> dict[str, Any]:
    flow = ws.flows[start.flow]
    return {
        "id": start.id,
        "uuid": start.uuid,
        "flow": ref_json(flow),
        "contacts": [ref_json(ws.contacts[u]) for u in start.contacts if u in ws.contacts],
        "groups": [ref_json(ws.groups[u]) for u in start.groups if u in ws.groups],
        "urns": list(start.urns),
        "status": "pending",
        "progress": {"total": -1, "started": 0},
        "params": copy.deepcopy(start.params),
        "extra": copy.deepcopy(start.params),
        "restart_participants": start.restart_participants,
        "exclude_active": start.exclude_active,
        "created_on": start.created_on,
        "modified_on": start.created_on,
    }


def broadcast_json(ws: Workspace, broadcast: Broadcast) -> dict[str, Any]:
    return {
        "id": broadcast.id,
        "uuid": broadcast.uuid,
        "text": broadcast.text,
        "urns": list(broadcast.urns),
        "contacts": [ref_json(ws.contacts[u]) for u in broadcast.contacts if u in ws.contacts],
        "groups": [ref_json(ws.groups[u]) for u in broadcast.groups if u in ws.groups],
        "status": "queued",
        "created_on": broadcast.created_on,
    }


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(data), status=status, headers=headers, mimetype="application/json")


def workspace_summary(ws: Workspace) -> dict[str, Any]:
    limit = {"requests": ws.rate_limit[0], "window": ws.rate_limit[1]} if ws.rate_limit else None
    return {
        "name": ws.name,
        "uuid": ws.uuid,
        "token": ws.token,
        "page_size": ws.page_size,
        "anon": ws.anon,
        "rate_limit": limit,
        "channel": dict(ws.channel),
    }


def fault_json(fault: Fault) -> dict[str, Any]:
    return {
        "id": fault.id,
        "status": fault.status,
        "delay": fault.delay,
        "count": fault.count,
        "path": fault.path,
        "retry_after": fault.retry_after,
        "body": fault.body,
    }


def workspace_state(ws: Workspace) -> dict[str, Any]:
    """Everything the fake knows about a workspace, oldest first."""

    def ordered(items: Iterable[Any]) -> list[Any]:
        return sorted(items, key=lambda r: r.seq)

    messages = []
    for message in ordered(ws.messages.values()):
        entry = message_json(ws, message)
        entry["urn"] = message.urn  # the real URN, even in anon workspaces
        messages.append(entry)
    return {
        "workspace": workspace_summary(ws),
        "contacts": [contact_json(ws, c) for c in ordered(ws.contacts.values())],
        "groups": [
            {**group_json(ws, g), "members": sorted(g.members)} for g in ordered(ws.groups.values())
        ],
        "flows": [
            {**flow_json(ws, f), "nodes": list(f.nodes), "wait_node": f.wait_node}
            for f in ordered(ws.flows.values())
        ],
        "labels": [label_json(ws, label) for label in ordered(ws.labels.values())],
        "messages": messages,
        "outgoing": [m for m in messages if m["direction"] == "out"],
        "flow_starts": [flow_start_json(ws, s) for s in ordered(ws.flow_starts)],
        "broadcasts": [broadcast_json(ws, b) for b in ordered(ws.broadcasts)],
        "runs": [
            {"contact": contact, "flow": flow, "uuid": run.uuid, "path": list(run.path)}
            for (contact, flow), run in ws.runs.items()
        ],
        "faults": [fault_json(f) for f in ws.faults],
    }

"""The fake's optional state file: the workspaces and id counters as JSON, written and read back.

State lives in memory. With a ``state_file`` (``upartners run`` gives it one in its data folder)
the workspaces are also written to that JSON file after every request that may change them and
read back at the next start, so the demo's contacts keep their groups across a restart; the
request log, injected faults and rate-limit counters are not kept.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .state import (
    Broadcast,
    Contact,
    FakeState,
    Flow,
    FlowStart,
    Group,
    Label,
    Message,
    Run,
    Workspace,
)

STATE_FILE_VERSION = 1


def dump_state(state: FakeState) -> dict[str, Any]:
    """The workspaces and id counters as JSON-ready data (see :func:`restore_state`)."""
    with state.lock:
        return {
            "version": STATE_FILE_VERSION,
            "last_seq": state.last_seq,
            "last_ids": dict(state.last_ids),
            "workspaces": [_dump_workspace(ws) for ws in state.workspaces.values()],
        }


def _dump_workspace(ws: Workspace) -> dict[str, Any]:
    return {
        "name": ws.name,
        "token": ws.token,
        "uuid": ws.uuid,
        "page_size": ws.page_size,
        "anon": ws.anon,
        "channel": dict(ws.channel),
        "rate_limit": list(ws.rate_limit) if ws.rate_limit else None,
        "contacts": [asdict(c) for c in ws.contacts.values()],
        "groups": [{**asdict(g), "members": sorted(g.members)} for g in ws.groups.values()],
        "flows": [asdict(f) for f in ws.flows.values()],
        "labels": [asdict(label) for label in ws.labels.values()],
        "messages": [asdict(m) for m in ws.messages.values()],
        "flow_starts": [asdict(s) for s in ws.flow_starts],
        "broadcasts": [asdict(b) for b in ws.broadcasts],
        "runs": [
            {"contact": contact, "flow": flow, **asdict(run)}
            for (contact, flow), run in ws.runs.items()
        ],
    }


def restore_state(state: FakeState, data: dict[str, Any]) -> None:
    """Replace the state's workspaces and counters with those of :func:`dump_state`'s data."""
    if data.get("version") != STATE_FILE_VERSION:
        raise ValueError(f"unknown state file version {data.get('version')!r}")
    with state.lock:
        state.workspaces.clear()
        for spec in data["workspaces"]:
            ws = Workspace(
                name=spec["name"],
                token=spec["token"],
                uuid=spec["uuid"],
                page_size=spec["page_size"],
                anon=spec["anon"],
                channel=spec["channel"],
                rate_limit=tuple(spec["rate_limit"]) if spec["rate_limit"] else None,
            )
            ws.contacts = {c["uuid"]: Contact(**c) for c in spec["contacts"]}
            ws.groups = {
                g["uuid"]: Group(**{**g, "members": set(g["members"])}) for g in spec["groups"]
            }
            ws.flows = {f["uuid"]: Flow(**f) for f in spec["flows"]}
            ws.labels = {label["uuid"]: Label(**label) for label in spec["labels"]}
            ws.messages = {m["id"]: Message(**m) for m in spec["messages"]}
            ws.flow_starts = [FlowStart(**s) for s in spec["flow_starts"]]
            ws.broadcasts = [Broadcast(**b) for b in spec["broadcasts"]]
            for run in spec["runs"]:
                key = (run.pop("contact"), run.pop("flow"))
                ws.runs[key] = Run(**run)
            state.workspaces[ws.name] = ws
        state.last_seq = data["last_seq"]
        state.last_ids = dict(data["last_ids"])


def save_state(state: FakeState, path: Path) -> None:
    """Write the state file whole, then rename it into place: a crash leaves the old one."""
    with state.lock:  # one writer at a time, and a consistent snapshot
        text = json.dumps(dump_state(state), separators=(",", ":"))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)

"""The fake's in-memory state: a :class:`FakeState` holds one :class:`Workspace` per RapidPro
workspace (contacts, groups, flows, labels, messages, flow starts, broadcasts, runs, faults).

Here too are the functions that add things to a workspace and find them in it; a bad spec raises
:class:`ControlError`, which the ``/_fake/`` control endpoints answer with.
"""

from __future__ import annotations

import re
import threading
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DEFAULT_PAGE_SIZE = 250
REQUEST_LOG_SIZE = 10_000


def now_iso() -> str:
    """RFC 3339 with microseconds and ``Z``, as RapidPro writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass
class Contact:
    uuid: str
    name: str | None
    status: str
    language: str | None
    urns: list[str]
    fields: dict[str, Any]
    created_on: str
    modified_on: str
    last_seen_on: str | None
    seq: int
    flow: str | None = None  # uuid of the flow the contact is currently in


@dataclass
class Group:
    uuid: str
    name: str
    query: str | None
    members: set[str]
    seq: int


@dataclass
class Flow:
    uuid: str
    name: str
    type: str
    archived: bool
    nodes: list[str]
    wait_node: str
    revision: int
    id: int
    created_on: str
    seq: int


@dataclass
class Label:
    uuid: str
    name: str
    seq: int


@dataclass
class Message:
    id: int
    uuid: str
    contact: str
    urn: str | None
    direction: str  # "in" / "out"
    text: str
    attachments: list[str]
    status: str
    visibility: str  # visible / archived / deleted
    labels: list[str]
    flow: str | None
    broadcast: int | None
    created_on: str
    modified_on: str
    sent_on: str | None
    seq: int


@dataclass
class FlowStart:
    id: int
    uuid: str
    flow: str
    contacts: list[str]
    groups: list[str]
    urns: list[str]
    restart_participants: bool
    exclude_active: bool
    params: dict[str, Any]
    created_on: str
    seq: int


@dataclass
class Broadcast:
    id: int
    uuid: str
    text: Any
    urns: list[str]
    contacts: list[str]
    groups: list[str]
    created_on: str
    seq: int


@dataclass
class Run:
    uuid: str
    id: int
    created_on: str
    path: list[dict[str, Any]]


@dataclass
class Fault:
    id: int
    status: int | None
    delay: float
    count: int | None
    path: str | None
    retry_after: int | None
    body: Any


@dataclass
class Workspace:
    name: str
    token: str
    uuid: str
    page_size: int
    anon: bool
    channel: dict[str, Any]
    rate_limit: tuple[int, float] | None = None  # (requests, window seconds)
    hits: deque[float] = field(default_factory=deque)
    contacts: dict[str, Contact] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    messages: dict[int, Message] = field(default_factory=dict)
    flow_starts: list[FlowStart] = field(default_factory=list)
    broadcasts: list[Broadcast] = field(default_factory=list)
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)  # (contact, flow) -> run
    faults: list[Fault] = field(default_factory=list)


class FakeState:
    """All workspaces and the request log; every access holds :attr:`lock`."""

    def __init__(self, *, page_size: int = DEFAULT_PAGE_SIZE, clock: Callable[[], float]) -> None:
        self.lock = threading.RLock()
        self.page_size = page_size
        self.clock = clock
        self.workspaces: dict[str, Workspace] = {}
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        # The last number handed out: plain counters, so a state file can carry them on.
        self.last_seq = 0
        self.last_ids: dict[str, int] = {}

    def next_seq(self) -> int:
        with self.lock:
            self.last_seq += 1
            return self.last_seq

    def next_id(self, kind: str) -> int:
        with self.lock:
            self.last_ids[kind] = self.last_ids.get(kind, 0) + 1
            return self.last_ids[kind]

    def by_token(self, token: str) -> Workspace | None:
        for ws in self.workspaces.values():
            if ws.token == token:
                return ws
        return None


class ControlError(Exception):
    """A bad request to a ``/_fake/`` control endpoint."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def load_workspace(state: FakeState, spec: dict[str, Any]) -> Workspace:
    """Create a workspace from a spec (see :func:`.seed.demo_seed` for the format)."""
    name = spec.get("name")
    token = spec.get("token")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ControlError("workspace 'name' must be a non-empty slug")
    if not isinstance(token, str) or not token:
        raise ControlError("workspace 'token' is required")
    with state.lock:
        if name in state.workspaces:
            raise ControlError(f"workspace {name!r} exists", status=409)
        if state.by_token(token):
            raise ControlError("that token belongs to another workspace", status=409)
        channel = dict(spec.get("channel") or {})
        channel.setdefault("uuid", new_uuid())
        channel.setdefault("name", f"{name} channel")
        channel.setdefault("address", "+10000000000")
        channel["id"] = state.next_id("channel")
        ws = Workspace(
            name=name,
            token=token,
            uuid=spec.get("uuid") or new_uuid(),
            page_size=positive_int(spec.get("page_size", state.page_size), "page_size"),
            anon=bool(spec.get("anon", False)),
            channel=channel,
        )
        if spec.get("rate_limit"):
            ws.rate_limit = parse_rate_limit(spec["rate_limit"])
        state.workspaces[name] = ws
        try:
            for group in spec.get("groups", []):
                add_group(state, ws, group)
            for flow in spec.get("flows", []):
                add_flow(state, ws, flow)
            for label in spec.get("labels", []):
                add_label(state, ws, label)
            for contact in spec.get("contacts", []):
                add_contact(state, ws, contact)
            for message in spec.get("messages", []):
                add_message(state, ws, message)
        except Exception:
            del state.workspaces[name]
            raise
        return ws


def positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ControlError(f"{name!r} must be a positive integer")
    return value


def parse_rate_limit(value: Any) -> tuple[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ControlError("'rate_limit' must be {'requests': N, 'window': seconds} or null")
    window = value.get("window", 3600)
    if not isinstance(window, int | float) or window <= 0:
        raise ControlError("'window' must be a positive number of seconds")
    return positive_int(value.get("requests"), "requests"), float(window)


def _unique_uuid(ws_items: dict[str, Any], value: Any) -> str:
    result = value or new_uuid()
    if not isinstance(result, str) or result in ws_items:
        raise ControlError(f"uuid {result!r} is invalid or already used")
    return result


def add_group(state: FakeState, ws: Workspace, spec: dict[str, Any]) -> Group:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError("group 'name' is required")
    if find_by_name(ws.groups.values(), name):
        raise ControlError(f"group {name!r} exists", status=409)
    group = Group(
        uuid=_unique_uuid(ws.groups, spec.get("uuid")),
        name=name,
        query=spec.get("query") or None,
        members=set(),
        seq=state.next_seq(),
    )
    ws.groups[group.uuid] = group
    return group


def add_flow(state: FakeState, ws: Workspace, spec: dict[str, Any]) -> Flow:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError("flow 'name' is required")
    nodes = list(spec.get("nodes") or [new_uuid(), new_uuid()])
    wait_node = spec.get("wait_node") or nodes[-1]
    if wait_node not in nodes:
        nodes.append(wait_node)
    flow = Flow(
        uuid=_unique_uuid(ws.flows, spec.get("uuid")),
        name=name,
        type=spec.get("type", "message"),
        archived=bool(spec.get("archived", False)),
        nodes=nodes,
        wait_node=wait_node,
        revision=int(spec.get("revision", 1)),
        id=state.next_id("flow"),
        created_on=now_iso(),
        seq=state.next_seq(),
    )
    ws.flows[flow.uuid] = flow
    return flow


def add_label(state: FakeState, ws: Workspace, spec: dict[str, Any]) -> Label:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ControlError("label 'name' is required")
    if find_by_name(ws.labels.values(), name):
        raise ControlError(f"label {name!r} exists", status=409)
    label = Label(uuid=_unique_uuid(ws.labels, spec.get("uuid")), name=name, seq=state.next_seq())
    ws.labels[label.uuid] = label
    return label


CONTACT_STATUSES = ("active", "blocked", "stopped", "archived")


def add_contact(state: FakeState, ws: Workspace, spec: dict[str, Any]) -> Contact:
    status = spec.get("status", "active")
    if status not in CONTACT_STATUSES:
        raise ControlError(f"contact 'status' must be one of {', '.join(CONTACT_STATUSES)}")
    urns = spec.get("urns", [])
    if not isinstance(urns, list) or not all(isinstance(u, str) and ":" in u for u in urns):
        raise ControlError("contact 'urns' must be a list of 'scheme:path' strings")
    groups = [control_group(ws, ref) for ref in spec.get("groups", [])]
    created = now_iso()
    contact = Contact(
        uuid=_unique_uuid(ws.contacts, spec.get("uuid")),
        name=spec.get("name"),
        status=status,
        language=spec.get("language"),
        urns=list(urns),
        fields=dict(spec.get("fields") or {}),
        created_on=created,
        modified_on=created,
        last_seen_on=spec.get("last_seen_on"),
        seq=state.next_seq(),
    )
    ws.contacts[contact.uuid] = contact
    for group in groups:
        group.members.add(contact.uuid)
    return contact


def add_message(state: FakeState, ws: Workspace, spec: dict[str, Any]) -> Message:
    contact = ws.contacts.get(spec.get("contact", ""))
    if contact is None:
        raise ControlError(f"no contact {spec.get('contact')!r} in workspace {ws.name!r}")
    direction = spec.get("direction", "in")
    if direction not in ("in", "out"):
        raise ControlError("message 'direction' must be 'in' or 'out'")
    flow = spec.get("flow")
    if flow is not None and flow not in ws.flows:
        raise ControlError(f"no flow {flow!r}")
    labels = [_control_label(ws, ref).uuid for ref in spec.get("labels", [])]
    status = spec.get("status", "handled" if direction == "in" else "queued")
    message = new_message(
        state,
        ws,
        contact,
        direction=direction,
        text=str(spec.get("text", "")),
        status=status,
        flow=flow,
        uuid=spec.get("uuid"),
    )
    message.labels = labels
    if spec.get("archived"):
        message.visibility = "archived"
    return message


def control_workspace(state: FakeState, name: str) -> Workspace:
    ws = state.workspaces.get(name)
    if ws is None:
        raise ControlError(f"no workspace {name!r}", status=404)
    return ws


def control_group(ws: Workspace, ref: Any) -> Group:
    group = find_group(ws, ref)
    if group is None:
        raise ControlError(f"no group {ref!r} in workspace {ws.name!r}")
    return group


def _control_label(ws: Workspace, ref: Any) -> Label:
    label = find_label(ws, ref)
    if label is None:
        raise ControlError(f"no label {ref!r} in workspace {ws.name!r}")
    return label


def find_by_name(items: Iterable[Any], name: str) -> Any:
    folded = name.casefold()
    return next((item for item in items if item.name.casefold() == folded), None)


def find_group(ws: Workspace, ref: Any) -> Group | None:
    if not isinstance(ref, str):
        return None
    return ws.groups.get(ref) or find_by_name(ws.groups.values(), ref)


def find_label(ws: Workspace, ref: Any) -> Label | None:
    if not isinstance(ref, str):
        return None
    return ws.labels.get(ref) or find_by_name(ws.labels.values(), ref)


def find_contact(ws: Workspace, ref: Any) -> Contact | None:
    if not isinstance(ref, str):
        return None
    if ref in ws.contacts:
        return ws.contacts[ref]
    if ":" in ref:  # a URN
        return next((c for c in ws.contacts.values() if ref in c.urns), None)
    return None


def new_message(
    state: FakeState,
    ws: Workspace,
    contact: Contact,
    *,
    direction: str,
    text: str,
    status: str,
    flow: str | None = None,
    attachments: list[str] | None = None,
    broadcast: int | None = None,
    uuid: str | None = None,
) -> Message:
    stamp = now_iso()
    message = Message(
        id=state.next_id("message"),
        uuid=uuid or new_uuid(),
        contact=contact.uuid,
        urn=contact.urns[0] if contact.urns else None,
        direction=direction,
        text=text,
        attachments=list(attachments or []),
        status=status,
        visibility="visible",
        labels=[],
        flow=flow,
        broadcast=broadcast,
        created_on=stamp,
        modified_on=stamp,
        sent_on=None,
        seq=state.next_seq(),
    )
    ws.messages[message.id] = message
    return message

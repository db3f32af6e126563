"""A contract fake of the RapidPro API v2, in memory, for tests and the local demo.

It is not a flow engine: it runs no flows. It answers the API v2 calls U-Partners makes the way
RapidPro answers them (token auth, cursor pages, validation errors, rate limiting) and keeps the
state those calls change (group membership, outgoing messages, flow starts with their params,
message labels and archiving), so tests can check what the product asked the engine to do.

API, under ``/api/v2/<endpoint>.json`` with ``Authorization: Token <key>``:
contacts (GET), contact_actions (POST), groups (GET), flows (GET), messages (GET, POST),
broadcasts (GET, POST), flow_starts (GET, POST), message_actions (POST), labels (GET, POST),
org / workspace (GET).

Test-only control endpoints live under ``/_fake/`` (never under ``/api/v2``): create workspaces and
their contacts, groups, flows, labels and messages; read the state and a request log; inject
faults; set the rate limit and page size; reset; and emit a webhook in one of four body shapes
(see :mod:`fakes.rapidpro.webhooks`). ``docs`` for them: the ``_control_*`` functions below.

State lives in memory. With a ``state_file`` (``upartners run`` gives it one in its data folder)
the workspaces are also written to that JSON file after every request that may change them and
read back at the next start, so the demo's contacts keep their groups across a restart; the
request log, injected faults and rate-limit counters are not kept.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Flask, Response, request

from . import webhooks
from .faults import _make_fault, _take_fault, fault_response
from .persistence import restore_state, save_state
from .seed import SEEDS
from .serialize import (
    _contact_groups,
    _fault_json,
    _json_response,
    _mask_urn,
    _ref,
    _workspace_summary,
    broadcast_json,
    contact_json,
    flow_json,
    flow_start_json,
    group_json,
    label_json,
    message_json,
    workspace_state,
)
from .state import (
    CONTACT_STATUSES,
    DEFAULT_PAGE_SIZE,
    ControlError,
    FakeState,
    Workspace,
    _Broadcast,
    _Contact,
    _control_group,
    _control_workspace,
    _find_by_name,
    _find_contact,
    _find_group,
    _find_label,
    _Flow,
    _FlowStart,
    _Message,
    _new_message,
    _new_uuid,
    _positive_int,
    _rate_limit,
    _Run,
    add_contact,
    add_flow,
    add_group,
    add_label,
    add_message,
    load_workspace,
    now_iso,
)
from .validation import (
    MAX_NAME_LENGTH,
    ApiError,
    _body,
    _boolean,
    _check_name,
    _choice,
    _contacts_field,
    _control_body,
    _Errors,
    _groups_field,
    _list_field,
    _non_field,
    _text_and_attachments,
)

# ---------------------------------------------------------------------------------------------
# API v2 request handling
# ---------------------------------------------------------------------------------------------


def _page(ws: Workspace, records: Iterable[Any], render: Callable[[Workspace, Any], Any]) -> Any:
    """Newest first; the cursor is the seq of the last item shown (opaque to clients)."""
    ordered = sorted(records, key=lambda r: r.seq, reverse=True)
    cursor = request.args.get("cursor")
    if cursor:
        try:
            before = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("s:"))
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise ApiError(404, {"detail": "Invalid cursor"}) from exc
        ordered = [r for r in ordered if r.seq < before]
    page = ordered[: ws.page_size]
    next_url = None
    if len(ordered) > ws.page_size:
        args = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
        token = base64.urlsafe_b64encode(f"s:{page[-1].seq}".encode()).decode()
        next_url = f"{request.base_url}?{urlencode([*args, ('cursor', token)])}"
    return {"next": next_url, "previous": None, "results": [render(ws, r) for r in page]}


def _filter_uuid(records: Iterable[Any]) -> list[Any]:
    uuid = request.args.get("uuid")
    return [r for r in records if uuid is None or r.uuid == uuid]


def _filter_name(records: Iterable[Any]) -> list[Any]:
    name = request.args.get("name")
    if name is None:
        return list(records)
    return [r for r in records if r.name.casefold() == name.casefold()]


def api_get_contacts(state: FakeState, ws: Workspace) -> Response:
    contacts = _filter_uuid(ws.contacts.values())
    if "urn" in request.args:
        contacts = [c for c in contacts if request.args["urn"] in c.urns]
    if "group" in request.args:
        group = _find_group(ws, request.args["group"])
        contacts = [c for c in contacts if group is not None and c.uuid in group.members]
    return _json_response(_page(ws, contacts, contact_json))


CONTACT_ACTIONS = ("add", "remove", "block", "unblock", "interrupt", "archive_messages", "delete")


def api_contact_actions(state: FakeState, ws: Workspace) -> Response:
    data = _body()
    errors = _Errors()
    refs = _list_field(data, "contacts", errors, required=True)
    contacts: list[_Contact] = []
    if refs is not None and not refs:
        errors.add("contacts", "Contacts can't be empty.")
    for ref in refs or []:
        contact = _find_contact(ws, ref)
        if contact is None:
            errors.add("contacts", f"No such object: {ref}")
            break
        contacts.append(contact)
    action = _choice(data, "action", CONTACT_ACTIONS, errors)
    group = None
    if "group" in data:
        ref = data["group"]
        if ref in (None, ""):
            errors.add("group", "This field may not be null.")
        else:
            group = _find_group(ws, ref)
            if group is None:
                errors.add("group", f"No such object: {ref}")
            elif group.query:
                errors.add("group", f"Contact group must not be query based: {group.name}")
    errors.raise_any()

    if action in ("add", "remove") and group is None:
        raise _non_field(f'For action "{action}" you should also specify a group')
    if action not in ("add", "remove") and group is not None:
        raise _non_field(f'For action "{action}" you should not specify a group')
    if action == "add":
        inactive = [c.uuid for c in contacts if c.status != "active"]
        if inactive:
            listed = ", ".join(inactive)
            raise _non_field(f"Non-active contacts cannot be added to groups: {listed}")

    stamp = now_iso()
    for contact in contacts:
        if action == "add" and group is not None:
            group.members.add(contact.uuid)
        elif action == "remove" and group is not None:
            group.members.discard(contact.uuid)
        elif action in ("interrupt", "block"):
            _interrupt(ws, contact)
        elif action == "unblock" and contact.status == "blocked":
            contact.status = "active"
        elif action == "archive_messages":
            for message in ws.messages.values():
                mine = message.contact == contact.uuid and message.direction == "in"
                if mine and message.visibility == "visible":
                    message.visibility = "archived"
        elif action == "delete":
            _interrupt(ws, contact)
            for g in ws.groups.values():
                g.members.discard(contact.uuid)
            del ws.contacts[contact.uuid]
            continue
        if action == "block":
            contact.status = "blocked"
            for g in ws.groups.values():
                if not g.query:
                    g.members.discard(contact.uuid)
        contact.modified_on = stamp
    return Response(status=204)


def _interrupt(ws: Workspace, contact: _Contact) -> None:
    contact.flow = None
    for key in [k for k in ws.runs if k[0] == contact.uuid]:
        del ws.runs[key]


def api_get_groups(state: FakeState, ws: Workspace) -> Response:
    return _json_response(_page(ws, _filter_name(_filter_uuid(ws.groups.values())), group_json))


def api_get_flows(state: FakeState, ws: Workspace) -> Response:
    flows = _filter_uuid(ws.flows.values())
    if "type" in request.args:
        flows = [f for f in flows if f.type == request.args["type"]]
    if "archived" in request.args:
        wanted = request.args["archived"].lower() in ("1", "true")
        flows = [f for f in flows if f.archived == wanted]
    return _json_response(_page(ws, flows, flow_json))


def api_get_labels(state: FakeState, ws: Workspace) -> Response:
    return _json_response(_page(ws, _filter_name(_filter_uuid(ws.labels.values())), label_json))


def api_post_labels(state: FakeState, ws: Workspace) -> Response:
    data = _body()
    errors = _Errors()
    target = None
    if "uuid" in request.args:
        target = ws.labels.get(request.args["uuid"])
        if target is None:
            raise ApiError(404, {"detail": "Not found."})
    others = [label for label in ws.labels.values() if label is not target]
    _check_name(data.get("name"), errors, others)
    errors.raise_any()
    if target is not None:
        target.name = data["name"]
        return _json_response(label_json(ws, target))
    label = add_label(state, ws, {"name": data["name"]})
    return _json_response(label_json(ws, label), status=201)


MESSAGE_FOLDERS: dict[str, Callable[[_Message], bool]] = {
    "inbox": lambda m: m.direction == "in" and m.visibility == "visible" and m.flow is None,
    "flows": lambda m: m.direction == "in" and m.visibility == "visible" and m.flow is not None,
    "archived": lambda m: m.direction == "in" and m.visibility == "archived",
    "outbox": lambda m: m.direction == "out" and m.status in ("initializing", "queued"),
    "sent": lambda m: m.direction == "out" and m.status in ("wired", "sent", "delivered"),
    "failed": lambda m: m.direction == "out" and m.status == "failed",
    "incoming": lambda m: m.direction == "in",
}


def api_get_messages(state: FakeState, ws: Workspace) -> Response:
    args = request.args
    exclusive = [p for p in ("contact", "folder", "label", "broadcast") if p in args]
    if len(exclusive) > 1:
        names = ", ".join(("contact", "folder", "label", "broadcast"))
        raise ApiError(400, {"detail": f"You may only specify one of the {names} parameters"})
    messages = _filter_uuid(ws.messages.values())
    folder = args.get("folder", "").lower() or None
    if folder != "incoming":
        messages = [m for m in messages if m.visibility != "deleted"]
    if "id" in args:
        if not args["id"].isdigit():
            raise ApiError(400, {"detail": "Value for id must be an integer"})
        messages = [m for m in messages if m.id == int(args["id"])]
    if "contact" in args:
        messages = [m for m in messages if m.contact == args["contact"]]
    if folder is not None:
        keep = MESSAGE_FOLDERS.get(folder, lambda m: False)
        messages = [m for m in messages if keep(m)]
    if "label" in args:
        label = _find_label(ws, args["label"])
        messages = [m for m in messages if label is not None and label.uuid in m.labels]
    if "broadcast" in args:
        messages = [m for m in messages if str(m.broadcast) == args["broadcast"]]
    return _json_response(_page(ws, messages, message_json))


def api_post_messages(state: FakeState, ws: Workspace) -> Response:
    data = _body()
    errors = _Errors()
    contact = None
    if "contact" not in data:
        errors.add("contact", "This field is required.")
    else:
        contact = _find_contact(ws, data["contact"])
        if contact is None:
            errors.add("contact", f"No such object: {data['contact']}")
    text, attachments = _text_and_attachments(data, errors)
    if isinstance(text, dict):
        errors.add("text", "Not a valid string.")
    errors.raise_any()
    assert contact is not None
    if not text and not attachments:
        raise _non_field("Must provide either text or attachments.")
    message = _new_message(
        state,
        ws,
        contact,
        direction="out",
        text=text or "",
        attachments=attachments,
        status="queued" if contact.urns else "failed",
    )
    return _json_response(message_json(ws, message), status=201)


def api_get_broadcasts(state: FakeState, ws: Workspace) -> Response:
    return _json_response(_page(ws, _filter_uuid(ws.broadcasts), broadcast_json))


def api_post_broadcasts(state: FakeState, ws: Workspace) -> Response:
    data = _body()
    errors = _Errors()
    contacts = _contacts_field(ws, data, "contacts", errors)
    groups = _groups_field(ws, data, errors)
    urns = _list_field(data, "urns", errors) or []
    text, attachments = _text_and_attachments(data, errors)
    errors.raise_any()
    if not text and not attachments:
        raise _non_field("Must provide either text or attachments.")
    broadcast = _Broadcast(
        id=state.next_id("broadcast"),
        uuid=_new_uuid(),
        text=text,
        urns=list(urns),
        contacts=[c.uuid for c in contacts],
        groups=[g.uuid for g in groups],
        created_on=now_iso(),
        seq=state.next_seq(),
    )
    ws.broadcasts.append(broadcast)
    recipients = {c.uuid: c for c in contacts}
    for group in groups:
        recipients.update({u: ws.contacts[u] for u in group.members if u in ws.contacts})
    body = text if isinstance(text, str) else next(iter(text.values()), "") if text else ""
    for contact in recipients.values():
        if contact.status == "active":
            _new_message(
                state,
                ws,
                contact,
                direction="out",
                text=str(body),
                attachments=attachments,
                status="queued",
                broadcast=broadcast.id,
            )
    return _json_response(broadcast_json(ws, broadcast), status=201)


def api_get_flow_starts(state: FakeState, ws: Workspace) -> Response:
    return _json_response(_page(ws, _filter_uuid(ws.flow_starts), flow_start_json))


def api_post_flow_starts(state: FakeState, ws: Workspace) -> Response:
    data = _body()
    errors = _Errors()
    flow = None
    if "flow" not in data or data["flow"] is None:
        errors.add("flow", "This field is required.")
    else:
        flow = ws.flows.get(data["flow"]) if isinstance(data["flow"], str) else None
        flow = flow or _find_by_name(ws.flows.values(), str(data["flow"]))
        if flow is None:
            errors.add("flow", f"No such object: {data['flow']}")
    contacts = _contacts_field(ws, data, "contacts", errors)
    groups = _groups_field(ws, data, errors)
    urns = _list_field(data, "urns", errors) or []
    restart = _boolean(data, "restart_participants", True, errors)
    exclude_active = _boolean(data, "exclude_active", False, errors)
    params: dict[str, Any] = {}
    for key in ("extra", "params"):  # "params" wins over the deprecated "extra"
        if key in data and data[key] is not None:
            if not isinstance(data[key], dict):
                errors.add(key, "Must be a valid JSON object")
            else:
                params = data[key]
    errors.raise_any()
    assert flow is not None
    if not (contacts or groups or urns):
        raise _non_field("Must specify at least one group, contact or URN")
    start = _FlowStart(
        id=state.next_id("flow_start"),
        uuid=_new_uuid(),
        flow=flow.uuid,
        contacts=[c.uuid for c in contacts],
        groups=[g.uuid for g in groups],
        urns=list(urns),
        restart_participants=restart,
        exclude_active=exclude_active,
        params=copy.deepcopy(params),
        created_on=now_iso(),
        seq=state.next_seq(),
    )
    ws.flow_starts.append(start)
    for contact in contacts:
        if contact.status == "active":
            contact.flow = flow.uuid
    return _json_response(flow_start_json(ws, start), status=201)


MESSAGE_ACTIONS = ("label", "unlabel", "archive", "restore", "delete")


def api_message_actions(state: FakeState, ws: Workspace) -> Response:
    data = _body()
    errors = _Errors()
    requested: list[tuple[Any, _Message | None]] = []
    for item in _list_field(data, "messages", errors, required=True) or []:
        if not isinstance(item, int) or isinstance(item, bool):
            kind = type(item).__name__
            errors.add("messages", f"Incorrect type. Expected pk value, received {kind}.")
            break
        message = ws.messages.get(item)
        if message is not None and message.visibility == "deleted":
            message = None
        if message is not None and message.direction != "in":
            errors.add("messages", f"Not an incoming message: {item}")
            break
        requested.append((item, message))
    action = _choice(data, "action", MESSAGE_ACTIONS, errors)
    label = None
    if "label" in data:
        if data["label"] in (None, ""):
            errors.add("label", "This field may not be null.")
        else:
            label = _find_label(ws, data["label"])
            if label is None:
                errors.add("label", f"No such object: {data['label']}")
    label_name = data.get("label_name")
    if label_name is not None:
        if not isinstance(label_name, str) or len(label_name) > MAX_NAME_LENGTH:
            too_long = f"Ensure this field has no more than {MAX_NAME_LENGTH} characters."
            errors.add("label_name", too_long)
        elif '"' in label_name:
            errors.add("label_name", 'Cannot contain the character: "')
    errors.raise_any()
    if label is not None and label_name:
        raise _non_field("Can't specify both label and label_name.")
    wants_label = action in ("label", "unlabel")
    if wants_label and not (label or label_name):
        raise _non_field(f'For action "{action}" you should also specify a label')
    if not wants_label and (label or label_name):
        raise _non_field(f'For action "{action}" you should not specify a label')

    if label is None and label_name:
        label = _find_by_name(ws.labels.values(), label_name)
        if label is None and action == "label":
            label = add_label(state, ws, {"name": label_name})
    stamp = now_iso()
    for _, message in requested:
        if message is None:
            continue
        if action == "label" and label is not None and label.uuid not in message.labels:
            message.labels.append(label.uuid)
        elif action == "unlabel" and label is not None and label.uuid in message.labels:
            message.labels.remove(label.uuid)
        elif action == "archive" and message.visibility == "visible":
            message.visibility = "archived"
        elif action == "restore" and message.visibility == "archived":
            message.visibility = "visible"
        elif action == "delete":
            message.visibility = "deleted"
        message.modified_on = stamp
    failures = [item for item, message in requested if message is None]
    if failures:
        return _json_response({"failures": failures})
    return Response(status=204)


def api_get_org(state: FakeState, ws: Workspace) -> Response:
    return _json_response(
        {
            "uuid": ws.uuid,
            "name": ws.name,
            "country": "UG",
            "languages": ["eng"],
            "primary_language": "eng",
            "timezone": "Africa/Kampala",
            "date_style": "day_first",
            "anon": ws.anon,
            "credits": {"used": -1, "remaining": -1},
        }
    )


Handler = Callable[[FakeState, Workspace], Response]

ENDPOINTS: dict[str, dict[str, Handler]] = {
    "contacts": {"GET": api_get_contacts},
    "contact_actions": {"POST": api_contact_actions},
    "groups": {"GET": api_get_groups},
    "flows": {"GET": api_get_flows},
    "labels": {"GET": api_get_labels, "POST": api_post_labels},
    "messages": {"GET": api_get_messages, "POST": api_post_messages},
    "message_actions": {"POST": api_message_actions},
    "broadcasts": {"GET": api_get_broadcasts, "POST": api_post_broadcasts},
    "flow_starts": {"GET": api_get_flow_starts, "POST": api_post_flow_starts},
    "org": {"GET": api_get_org},
    "workspace": {"GET": api_get_org},
}


def _authenticate(state: FakeState) -> Workspace:
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(403, {"detail": "Authentication credentials were not provided."})
    scheme, _, key = header.partition(" ")
    ws = state.by_token(key.strip()) if scheme.lower() == "token" and key.strip() else None
    if ws is None:
        raise ApiError(403, {"detail": "Invalid token"})
    return ws


def _throttle(state: FakeState, ws: Workspace) -> None:
    if ws.rate_limit is None:
        return
    limit, window = ws.rate_limit
    now = state.clock()
    while ws.hits and ws.hits[0] <= now - window:
        ws.hits.popleft()
    if len(ws.hits) >= limit:
        wait = max(1, math.ceil(ws.hits[0] + window - now))
        raise ApiError(
            429,
            {"detail": f"Request was throttled. Expected available in {wait} seconds."},
            {"Retry-After": str(wait)},
        )
    ws.hits.append(now)


def _handle_api(state: FakeState, endpoint: str) -> Response:
    workspace: str | None = None
    try:
        if endpoint not in ENDPOINTS:
            raise ApiError(404, {"detail": "Not found."})
        with state.lock:
            ws = _authenticate(state)
            workspace = ws.name
            fault = _take_fault(ws, endpoint)
        if fault is not None:
            answer = fault_response(fault)
            if answer is not None:
                return answer
        with state.lock:
            _throttle(state, ws)
            handler = ENDPOINTS[endpoint].get(request.method)
            if handler is None:
                raise ApiError(405, {"detail": f'Method "{request.method}" not allowed.'})
            return handler(state, ws)
    except ApiError as exc:
        return _json_response(exc.body, exc.status, exc.headers)
    finally:
        request.environ["fake.workspace"] = workspace


def _log_request(state: FakeState, endpoint: str, response: Response) -> None:
    body = request.get_json(silent=True, force=True) if request.get_data() else None
    with state.lock:
        state.request_log.append(
            {
                "seq": state.next_seq(),
                "time": now_iso(),
                "workspace": request.environ.get("fake.workspace"),
                "method": request.method,
                "endpoint": endpoint,
                "path": request.path,
                "query": {k: request.args.getlist(k) for k in request.args},
                "body": body,
                "status": response.status_code,
            }
        )


# ---------------------------------------------------------------------------------------------
# Control endpoints (/_fake/...)
# ---------------------------------------------------------------------------------------------


def _run_for(
    state: FakeState,
    ws: Workspace,
    contact: _Contact,
    flow: _Flow,
    node: str,
    *,
    stamp: str,
    keep: bool,
) -> _Run:
    """The contact's run in the flow (reused while active), with ``node`` appended to its path."""
    run = ws.runs.get((contact.uuid, flow.uuid))
    if run is None:
        run = _Run(uuid=_new_uuid(), id=state.next_id("run"), created_on=stamp, path=[])
        leading = flow.nodes[: flow.nodes.index(node)] if node in flow.nodes else []
        run.path.extend({"node_uuid": n, "arrived_on": stamp} for n in leading)
        if keep:
            ws.runs[(contact.uuid, flow.uuid)] = run
    else:
        run = copy.deepcopy(run) if not keep else run
    run.path.append({"node_uuid": node, "arrived_on": stamp})
    return run


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _prepare_webhook(
    state: FakeState, ws: Workspace, contact_uuid: str, spec: dict[str, Any]
) -> tuple[webhooks.WebhookContext, _Message | None, str]:
    contact = ws.contacts.get(contact_uuid)
    if contact is None:
        raise ControlError(f"no contact {contact_uuid!r} in workspace {ws.name!r}", status=404)
    if contact.status == "blocked":
        raise ControlError("the contact is blocked: the engine ignores its messages", status=409)
    if spec.get("flow"):
        flow = ws.flows.get(spec["flow"])
        if flow is None:
            raise ControlError(f"no flow {spec['flow']!r}")
    else:
        flow = min(ws.flows.values(), key=lambda f: f.seq, default=None)
        if flow is None:
            raise ControlError("the workspace has no flow")
    node = spec.get("node") or flow.wait_node
    simulation = bool(spec.get("simulation", False))
    text = spec.get("text", "")
    attachments = []
    for item in spec.get("attachments", []):
        if isinstance(item, str):
            content_type, _, url = item.partition(":")
            item = {"content_type": content_type, "url": url}
        attachments.append({"content_type": item["content_type"], "url": item["url"]})
    if not isinstance(text, str) or not (text or attachments):
        raise ControlError("'text' (or 'attachments') is required")
    if not contact.urns:
        raise ControlError("the contact has no URN to write from")

    stamp = now_iso()
    message = None
    if simulation:  # the simulator's messages are not stored by the engine
        message_uuid = _new_uuid()
    else:
        if contact.status == "stopped":  # writing in again opts the contact back in
            contact.status = "active"
        message = _new_message(
            state,
            ws,
            contact,
            direction="in",
            text=text,
            status="handled",
            flow=flow.uuid,
            attachments=[f"{a['content_type']}:{a['url']}" for a in attachments],
        )
        message_uuid = message.uuid
        contact.last_seen_on = stamp
        contact.modified_on = stamp
        contact.flow = flow.uuid
    run = _run_for(state, ws, contact, flow, node, stamp=stamp, keep=not simulation)

    result_name = spec.get("result_name", "Message")
    results = spec.get("results")
    if results is None:
        results = {
            _snake(result_name): {
                "name": result_name,
                "value": text,
                "category": "All Responses",
                "node_uuid": node,
                "input": text,
                "created_on": stamp,
            }
        }
    urn = _mask_urn(ws, contact.urns[0])
    context = webhooks.WebhookContext(
        contact_uuid=contact.uuid,
        contact_name=contact.name,
        contact_urn=urn,
        contact_language=contact.language,
        contact_groups=tuple(_ref(g) for g in _contact_groups(ws, contact)),
        contact_fields=dict(contact.fields),
        flow_uuid=flow.uuid,
        flow_name=flow.name,
        flow_id=flow.id,
        flow_revision=flow.revision,
        node_uuid=node,
        run_uuid=run.uuid,
        run_id=run.id,
        run_created_on=run.created_on,
        path=tuple(dict(step) for step in run.path),
        text=text,
        message_uuid=message_uuid,
        message_created_on=stamp,
        attachments=tuple(attachments),
        channel={k: ws.channel[k] for k in ("uuid", "name", "address")},
        channel_id=ws.channel["id"],
        results=results,
    )
    return context, message, message_uuid


def _emit_webhook(state: FakeState, ws_name: str, contact_uuid: str) -> Response:
    spec = _control_body()
    shape = spec.get("shape", "upartners")
    if shape not in webhooks.BUILDERS:
        raise ControlError(f"'shape' must be one of {', '.join(webhooks.BUILDERS)}")
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ControlError("'url' (the ingest webhook URL) is required")
    extra_headers = spec.get("headers") or {}
    if not isinstance(extra_headers, dict):
        raise ControlError("'headers' must be an object")
    with state.lock:
        ws = _control_workspace(state, ws_name)
        context, message, message_uuid = _prepare_webhook(state, ws, contact_uuid, spec)
    body, content_type = webhooks.BUILDERS[shape](context)
    headers = webhooks.mailroom_headers(simulation=bool(spec.get("simulation", False)))
    content_type = spec.get("content_type", content_type)
    if content_type:
        headers["Content-Type"] = content_type
    headers.update({str(k): str(v) for k, v in extra_headers.items()})
    result: dict[str, Any] = {
        "message": {"id": message.id if message else None, "uuid": message_uuid},
        "run": context.run_uuid,
        "request": {"content_type": content_type, "body": body.decode("utf-8")},
    }
    started = time.monotonic()
    try:
        answer = requests.post(url, data=body, headers=headers, timeout=webhooks.WEBHOOK_TIMEOUT)
    except requests.RequestException as exc:
        result.update(status=None, body=None, error=f"{type(exc).__name__}: {exc}")
    else:
        try:
            answer_body: Any = answer.json()
        except ValueError:
            answer_body = answer.text
        result.update(status=answer.status_code, body=answer_body, error=None)
    result["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    return _json_response(result)


def _register_control(app: Flask, state: FakeState) -> None:
    def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Any]], Any]:
        def decorator(fn: Callable[..., Any]) -> Any:
            def view(**kwargs: Any) -> Response:
                try:
                    result = fn(**kwargs)
                except ControlError as exc:
                    return _json_response({"error": str(exc)}, exc.status)
                if isinstance(result, Response):
                    return result
                data, status = result if isinstance(result, tuple) else (result, 200)
                return _json_response(data, status)

            app.add_url_rule(f"/_fake{rule}", f"fake{rule}", view, methods=methods)
            return fn

        return decorator

    @route("/health", ["GET"])
    def health() -> Any:
        return {"ok": True, "service": "contract fake of the RapidPro API v2"}

    @route("/reset", ["POST"])
    def reset() -> Any:
        body = _control_body()
        with state.lock:
            state.workspaces.clear()
            state.request_log.clear()
            seed = body.get("seed")
            if seed is not None:
                if seed not in SEEDS:
                    raise ControlError(f"unknown seed {seed!r}")
                load_workspace(state, SEEDS[seed]())
            return {"workspaces": sorted(state.workspaces)}

    @route("/workspaces", ["GET", "POST"])
    def workspaces() -> Any:
        with state.lock:
            if request.method == "GET":
                return [_workspace_summary(ws) for ws in state.workspaces.values()]
            body = _control_body()
            if "seed" in body:
                if body["seed"] not in SEEDS:
                    raise ControlError(f"unknown seed {body['seed']!r}")
                body = SEEDS[body["seed"]]()
            return _workspace_summary(load_workspace(state, body)), 201

    @route("/workspaces/<ws>", ["GET", "DELETE"])
    def workspace(ws: str) -> Any:
        with state.lock:
            found = _control_workspace(state, ws)
            if request.method == "DELETE":
                del state.workspaces[ws]
                return Response(status=204)
            return _workspace_summary(found)

    @route("/workspaces/<ws>/state", ["GET"])
    def read_state(ws: str) -> Any:
        with state.lock:
            return workspace_state(_control_workspace(state, ws))

    @route("/workspaces/<ws>/settings", ["POST"])
    def settings(ws: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            if "page_size" in body:
                found.page_size = _positive_int(body["page_size"], "page_size")
            if "rate_limit" in body:
                found.rate_limit = _rate_limit(body["rate_limit"])
                found.hits.clear()
            if "anon" in body:
                found.anon = bool(body["anon"])
            return _workspace_summary(found)

    @route("/workspaces/<ws>/groups", ["POST"])
    def create_group(ws: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            group = add_group(state, found, body)
            return {**group_json(found, group), "members": []}, 201

    @route("/workspaces/<ws>/flows", ["POST"])
    def create_flow(ws: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            flow = add_flow(state, found, body)
            return {**flow_json(found, flow), "nodes": flow.nodes, "wait_node": flow.wait_node}, 201

    @route("/workspaces/<ws>/labels", ["POST"])
    def create_label(ws: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            return label_json(found, add_label(state, found, body)), 201

    @route("/workspaces/<ws>/contacts", ["POST"])
    def create_contact(ws: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            return contact_json(found, add_contact(state, found, body)), 201

    @route("/workspaces/<ws>/contacts/<uuid>", ["PATCH"])
    def update_contact(ws: str, uuid: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            contact = found.contacts.get(uuid)
            if contact is None:
                raise ControlError(f"no contact {uuid!r}", status=404)
            if "status" in body:
                if body["status"] not in CONTACT_STATUSES:
                    raise ControlError(f"'status' must be one of {', '.join(CONTACT_STATUSES)}")
                contact.status = body["status"]
            for key in ("name", "language"):
                if key in body:
                    setattr(contact, key, body[key])
            if "fields" in body:
                contact.fields.update(body["fields"] or {})
            if "groups" in body:
                wanted = {_control_group(found, ref).uuid for ref in body["groups"]}
                for group in found.groups.values():
                    if group.uuid in wanted:
                        group.members.add(uuid)
                    else:
                        group.members.discard(uuid)
            contact.modified_on = now_iso()
            return contact_json(found, contact)

    @route("/workspaces/<ws>/messages", ["POST"])
    def create_message(ws: str) -> Any:
        body = _control_body()
        with state.lock:
            found = _control_workspace(state, ws)
            return message_json(found, add_message(state, found, body)), 201

    @route("/workspaces/<ws>/faults", ["GET", "POST", "DELETE"])
    def faults(ws: str) -> Any:
        body = _control_body() if request.method == "POST" else {}
        with state.lock:
            found = _control_workspace(state, ws)
            if request.method == "DELETE":
                found.faults.clear()
                return Response(status=204)
            if request.method == "POST":
                fault = _make_fault(state, body)
                found.faults.append(fault)
                return _fault_json(fault), 201
            return [_fault_json(f) for f in found.faults]

    @route("/workspaces/<ws>/contacts/<uuid>/send", ["POST"])
    def send(ws: str, uuid: str) -> Any:
        return _emit_webhook(state, ws, uuid)

    @route("/requests", ["GET", "DELETE"])
    def request_log() -> Any:
        with state.lock:
            if request.method == "DELETE":
                state.request_log.clear()
                return Response(status=204)
            entries = list(state.request_log)
        for key in ("workspace", "endpoint", "method"):
            if key in request.args:
                entries = [e for e in entries if e[key] == request.args[key]]
        return entries


def create_app(
    *,
    seed: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    clock: Callable[[], float] = time.monotonic,
    state: FakeState | None = None,
    state_file: Path | None = None,
) -> Flask:
    """Build the contract fake's Flask app.

    ``page_size`` is the default for new workspaces; ``clock`` (seconds, monotonic) drives the
    rate limiter, so tests can share a fake clock with the client's ``sleep``. With a
    ``state_file`` that exists, the workspaces are read from it instead of seeded, and every
    request that may change them writes it again.
    """
    state = state or FakeState(page_size=page_size, clock=clock)
    if state_file is not None and state_file.exists():
        restore_state(state, json.loads(state_file.read_text(encoding="utf-8")))
    elif seed is not None:
        if seed not in SEEDS:
            raise ValueError(f"unknown seed {seed!r}; known: {', '.join(SEEDS)}")
        load_workspace(state, SEEDS[seed]())
    if state_file is not None:
        save_state(state, state_file)
    app = Flask(__name__)
    app.extensions["rapidpro_fake"] = state

    if state_file is not None:

        @app.after_request
        def keep(response: Response) -> Response:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                save_state(state, state_file)
            return response

    @app.route("/api/v2/<path:name>", methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
    def api(name: str) -> Response:
        endpoint = name.removesuffix(".json") if name.endswith(".json") else f"{name}/"
        response = _handle_api(state, endpoint)
        _log_request(state, endpoint, response)
        return response

    _register_control(app, state)
    return app

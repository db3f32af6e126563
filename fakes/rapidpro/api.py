"""The API v2 endpoints, under ``/api/v2/<endpoint>.json`` with ``Authorization: Token <key>``:
contacts (GET), contact_actions (POST), groups (GET), flows (GET), messages (GET, POST),
broadcasts (GET, POST), flow_starts (GET, POST), message_actions (POST), labels (GET, POST),
org / workspace (GET).

Each endpoint takes the state and the caller's workspace and answers the way RapidPro does, with
cursor pages and RapidPro's validation errors; :data:`ENDPOINTS` maps names and methods to them.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from flask import Response, request

from .serialize import (
    broadcast_json,
    contact_json,
    flow_json,
    flow_start_json,
    group_json,
    json_response,
    label_json,
    message_json,
)
from .state import (
    Broadcast,
    Contact,
    FakeState,
    FlowStart,
    Message,
    Workspace,
    add_label,
    find_by_name,
    find_contact,
    find_group,
    find_label,
    new_message,
    new_uuid,
    now_iso,
)
from .validation import (
    MAX_NAME_LENGTH,
    ApiError,
    FieldErrors,
    api_body,
    boolean,
    check_name,
    choice,
    contacts_field,
    groups_field,
    list_field,
    non_field,
    text_and_attachments,
)


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
        group = find_group(ws, request.args["group"])
        contacts = [c for c in contacts if group is not None and c.uuid in group.members]
    return json_response(_page(ws, contacts, contact_json))


CONTACT_ACTIONS = ("add", "remove", "block", "unblock", "interrupt", "archive_messages", "delete")


def api_contact_actions(state: FakeState, ws: Workspace) -> Response:
    data = api_body()
    errors = FieldErrors()
    refs = list_field(data, "contacts", errors, required=True)
    contacts: list[Contact] = []
    if refs is not None and not refs:
        errors.add("contacts", "Contacts can't be empty.")
    for ref in refs or []:
        contact = find_contact(ws, ref)
        if contact is None:
            errors.add("contacts", f"No such object: {ref}")
            break
        contacts.append(contact)
    action = choice(data, "action", CONTACT_ACTIONS, errors)
    group = None
    if "group" in data:
        ref = data["group"]
        if ref in (None, ""):
            errors.add("group", "This field may not be null.")
        else:
            group = find_group(ws, ref)
            if group is None:
                errors.add("group", f"No such object: {ref}")
            elif group.query:
                errors.add("group", f"Contact group must not be query based: {group.name}")
    errors.raise_any()

    if action in ("add", "remove") and group is None:
        raise non_field(f'For action "{action}" you should also specify a group')
    if action not in ("add", "remove") and group is not None:
        raise non_field(f'For action "{action}" you should not specify a group')
    if action == "add":
        inactive = [c.uuid for c in contacts if c.status != "active"]
        if inactive:
            listed = ", ".join(inactive)
            raise non_field(f"Non-active contacts cannot be added to groups: {listed}")

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


def _interrupt(ws: Workspace, contact: Contact) -> None:
    contact.flow = None
    for key in [k for k in ws.runs if k[0] == contact.uuid]:
        del ws.runs[key]


def api_get_groups(state: FakeState, ws: Workspace) -> Response:
    return json_response(_page(ws, _filter_name(_filter_uuid(ws.groups.values())), group_json))


def api_get_flows(state: FakeState, ws: Workspace) -> Response:
    flows = _filter_uuid(ws.flows.values())
    if "type" in request.args:
        flows = [f for f in flows if f.type == request.args["type"]]
    if "archived" in request.args:
        wanted = request.args["archived"].lower() in ("1", "true")
        flows = [f for f in flows if f.archived == wanted]
    return json_response(_page(ws, flows, flow_json))


def api_get_labels(state: FakeState, ws: Workspace) -> Response:
    return json_response(_page(ws, _filter_name(_filter_uuid(ws.labels.values())), label_json))


def api_post_labels(state: FakeState, ws: Workspace) -> Response:
    data = api_body()
    errors = FieldErrors()
    target = None
    if "uuid" in request.args:
        target = ws.labels.get(request.args["uuid"])
        if target is None:
            raise ApiError(404, {"detail": "Not found."})
    others = [label for label in ws.labels.values() if label is not target]
    check_name(data.get("name"), errors, others)
    errors.raise_any()
    if target is not None:
        target.name = data["name"]
        return json_response(label_json(ws, target))
    label = add_label(state, ws, {"name": data["name"]})
    return json_response(label_json(ws, label), status=201)


MESSAGE_FOLDERS: dict[str, Callable[[Message], bool]] = {
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
        label = find_label(ws, args["label"])
        messages = [m for m in messages if label is not None and label.uuid in m.labels]
    if "broadcast" in args:
        messages = [m for m in messages if str(m.broadcast) == args["broadcast"]]
    return json_response(_page(ws, messages, message_json))


def api_post_messages(state: FakeState, ws: Workspace) -> Response:
    data = api_body()
    errors = FieldErrors()
    contact = None
    if "contact" not in data:
        errors.add("contact", "This field is required.")
    else:
        contact = find_contact(ws, data["contact"])
        if contact is None:
            errors.add("contact", f"No such object: {data['contact']}")
    text, attachments = text_and_attachments(data, errors)
    if isinstance(text, dict):
        errors.add("text", "Not a valid string.")
    errors.raise_any()
    assert contact is not None
    if not text and not attachments:
        raise non_field("Must provide either text or attachments.")
    message = new_message(
        state,
        ws,
        contact,
        direction="out",
        text=text or "",
        attachments=attachments,
        status="queued" if contact.urns else "failed",
    )
    return json_response(message_json(ws, message), status=201)


def api_get_broadcasts(state: FakeState, ws: Workspace) -> Response:
    return json_response(_page(ws, _filter_uuid(ws.broadcasts), broadcast_json))


def api_post_broadcasts(state: FakeState, ws: Workspace) -> Response:
    data = api_body()
    errors = FieldErrors()
    contacts = contacts_field(ws, data, "contacts", errors)
    groups = groups_field(ws, data, errors)
    urns = list_field(data, "urns", errors) or []
    text, attachments = text_and_attachments(data, errors)
    errors.raise_any()
    if not text and not attachments:
        raise non_field("Must provide either text or attachments.")
    broadcast = Broadcast(
        id=state.next_id("broadcast"),
        uuid=new_uuid(),
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
            new_message(
                state,
                ws,
                contact,
                direction="out",
                text=str(body),
                attachments=attachments,
                status="queued",
                broadcast=broadcast.id,
            )
    return json_response(broadcast_json(ws, broadcast), status=201)


def api_get_flow_starts(state: FakeState, ws: Workspace) -> Response:
    return json_response(_page(ws, _filter_uuid(ws.flow_starts), flow_start_json))


def api_post_flow_starts(state: FakeState, ws: Workspace) -> Response:
    data = api_body()
    errors = FieldErrors()
    flow = None
    if "flow" not in data or data["flow"] is None:
        errors.add("flow", "This field is required.")
    else:
        flow = ws.flows.get(data["flow"]) if isinstance(data["flow"], str) else None
        flow = flow or find_by_name(ws.flows.values(), str(data["flow"]))
        if flow is None:
            errors.add("flow", f"No such object: {data['flow']}")
    contacts = contacts_field(ws, data, "contacts", errors)
    groups = groups_field(ws, data, errors)
    urns = list_field(data, "urns", errors) or []
    restart = boolean(data, "restart_participants", True, errors)
    exclude_active = boolean(data, "exclude_active", False, errors)
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
        raise non_field("Must specify at least one group, contact or URN")
    start = FlowStart(
        id=state.next_id("flow_start"),
        uuid=new_uuid(),
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
    return json_response(flow_start_json(ws, start), status=201)


MESSAGE_ACTIONS = ("label", "unlabel", "archive", "restore", "delete")


def api_message_actions(state: FakeState, ws: Workspace) -> Response:
    data = api_body()
    errors = FieldErrors()
    requested: list[tuple[Any, Message | None]] = []
    for item in list_field(data, "messages", errors, required=True) or []:
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
    action = choice(data, "action", MESSAGE_ACTIONS, errors)
    label = None
    if "label" in data:
        if data["label"] in (None, ""):
            errors.add("label", "This field may not be null.")
        else:
            label = find_label(ws, data["label"])
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
        raise non_field("Can't specify both label and label_name.")
    wants_label = action in ("label", "unlabel")
    if wants_label and not (label or label_name):
        raise non_field(f'For action "{action}" you should also specify a label')
    if not wants_label and (label or label_name):
        raise non_field(f'For action "{action}" you should not specify a label')

    if label is None and label_name:
        label = find_by_name(ws.labels.values(), label_name)
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
        return json_response({"failures": failures})
    return Response(status=204)


def api_get_org(state: FakeState, ws: Workspace) -> Response:
    return json_response(
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

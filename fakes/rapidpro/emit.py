"""A contact writing in, as the fake plays it: the incoming message is stored, the contact's run in
the flow moves on, and the webhook the engine would send is POSTed to the ingest in one of the
body shapes of :mod:`.webhooks` (the ``/_fake/.../contacts/<uuid>/send`` control endpoint).
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import requests
from flask import Response

from . import webhooks
from .serialize import contact_groups, json_response, mask_urn, ref_json
from .state import (
    Contact,
    ControlError,
    FakeState,
    Flow,
    Message,
    Run,
    Workspace,
    control_workspace,
    new_message,
    new_uuid,
    now_iso,
)
from .validation import control_body


def _run_for(
    state: FakeState,
    ws: Workspace,
    contact: Contact,
    flow: Flow,
    node: str,
    *,
    stamp: str,
    keep: bool,
) -> Run:
    """The contact's run in the flow (reused while active), with ``node`` appended to its path."""
    run = ws.runs.get((contact.uuid, flow.uuid))
    if run is None:
        run = Run(uuid=new_uuid(), id=state.next_id("run"), created_on=stamp, path=[])
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
) -> tuple[webhooks.WebhookContext, Message | None, str]:
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
        message_uuid = new_uuid()
    else:
        if contact.status == "stopped":  # writing in again opts the contact back in
            contact.status = "active"
        message = new_message(
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
    urn = mask_urn(ws, contact.urns[0])
    context = webhooks.WebhookContext(
        contact_uuid=contact.uuid,
        contact_name=contact.name,
        contact_urn=urn,
        contact_language=contact.language,
        contact_groups=tuple(ref_json(g) for g in contact_groups(ws, contact)),
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


def emit_webhook(state: FakeState, ws_name: str, contact_uuid: str) -> Response:
    """Store the contact's message, POST the webhook, and answer with what the ingest said."""
    spec = control_body()
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
        ws = control_workspace(state, ws_name)
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
    return json_response(result)

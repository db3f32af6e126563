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

import copy
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, request

from . import webhooks
from .dispatch import _handle_api, _log_request
from .faults import _make_fault
from .persistence import restore_state, save_state
from .seed import SEEDS
from .serialize import (
    _contact_groups,
    _fault_json,
    _json_response,
    _mask_urn,
    _ref,
    _workspace_summary,
    contact_json,
    flow_json,
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
    _Contact,
    _control_group,
    _control_workspace,
    _Flow,
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
    _control_body,
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

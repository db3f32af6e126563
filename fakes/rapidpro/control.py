"""Test-only control endpoints under ``/_fake/`` (never under ``/api/v2``): create workspaces and
their contacts, groups, flows, labels and messages; read the state and a request log; inject
faults; set the rate limit and page size; reset; and emit a webhook (see :mod:`.emit`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request

from .emit import emit_webhook
from .faults import make_fault
from .seed import SEEDS
from .serialize import (
    contact_json,
    fault_json,
    flow_json,
    group_json,
    json_response,
    label_json,
    message_json,
    workspace_state,
    workspace_summary,
)
from .state import (
    CONTACT_STATUSES,
    ControlError,
    FakeState,
    add_contact,
    add_flow,
    add_group,
    add_label,
    add_message,
    control_group,
    control_workspace,
    load_workspace,
    now_iso,
    parse_rate_limit,
    positive_int,
)
from .validation import control_body


def register_control(app: Flask, state: FakeState) -> None:
    """Add the ``/_fake/`` routes to ``app``; a :class:`ControlError` answers ``{"error": ...}``."""

    def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Any]], Any]:
        def decorator(fn: Callable[..., Any]) -> Any:
            def view(**kwargs: Any) -> Response:
                try:
                    result = fn(**kwargs)
                except ControlError as exc:
                    return json_response({"error": str(exc)}, exc.status)
                if isinstance(result, Response):
                    return result
                data, status = result if isinstance(result, tuple) else (result, 200)
                return json_response(data, status)

            app.add_url_rule(f"/_fake{rule}", f"fake{rule}", view, methods=methods)
            return fn

        return decorator

    @route("/health", ["GET"])
    def health() -> Any:
        return {"ok": True, "service": "contract fake of the RapidPro API v2"}

    @route("/reset", ["POST"])
    def reset() -> Any:
        body = control_body()
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
                return [workspace_summary(ws) for ws in state.workspaces.values()]
            body = control_body()
            if "seed" in body:
                if body["seed"] not in SEEDS:
                    raise ControlError(f"unknown seed {body['seed']!r}")
                body = SEEDS[body["seed"]]()
            return workspace_summary(load_workspace(state, body)), 201

    @route("/workspaces/<ws>", ["GET", "DELETE"])
    def workspace(ws: str) -> Any:
        with state.lock:
            found = control_workspace(state, ws)
            if request.method == "DELETE":
                del state.workspaces[ws]
                return Response(status=204)
            return workspace_summary(found)

    @route("/workspaces/<ws>/state", ["GET"])
    def read_state(ws: str) -> Any:
        with state.lock:
            return workspace_state(control_workspace(state, ws))

    @route("/workspaces/<ws>/settings", ["POST"])
    def settings(ws: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
            if "page_size" in body:
                found.page_size = positive_int(body["page_size"], "page_size")
            if "rate_limit" in body:
                found.rate_limit = parse_rate_limit(body["rate_limit"])
                found.hits.clear()
            if "anon" in body:
                found.anon = bool(body["anon"])
            return workspace_summary(found)

    @route("/workspaces/<ws>/groups", ["POST"])
    def create_group(ws: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
            group = add_group(state, found, body)
            return {**group_json(found, group), "members": []}, 201

    @route("/workspaces/<ws>/flows", ["POST"])
    def create_flow(ws: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
            flow = add_flow(state, found, body)
            return {**flow_json(found, flow), "nodes": flow.nodes, "wait_node": flow.wait_node}, 201

    @route("/workspaces/<ws>/labels", ["POST"])
    def create_label(ws: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
            return label_json(found, add_label(state, found, body)), 201

    @route("/workspaces/<ws>/contacts", ["POST"])
    def create_contact(ws: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
            return contact_json(found, add_contact(state, found, body)), 201

    @route("/workspaces/<ws>/contacts/<uuid>", ["PATCH"])
    def update_contact(ws: str, uuid: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
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
                wanted = {control_group(found, ref).uuid for ref in body["groups"]}
                for group in found.groups.values():
                    if group.uuid in wanted:
                        group.members.add(uuid)
                    else:
                        group.members.discard(uuid)
            contact.modified_on = now_iso()
            return contact_json(found, contact)

    @route("/workspaces/<ws>/messages", ["POST"])
    def create_message(ws: str) -> Any:
        body = control_body()
        with state.lock:
            found = control_workspace(state, ws)
            return message_json(found, add_message(state, found, body)), 201

    @route("/workspaces/<ws>/faults", ["GET", "POST", "DELETE"])
    def faults(ws: str) -> Any:
        body = control_body() if request.method == "POST" else {}
        with state.lock:
            found = control_workspace(state, ws)
            if request.method == "DELETE":
                found.faults.clear()
                return Response(status=204)
            if request.method == "POST":
                fault = make_fault(state, body)
                found.faults.append(fault)
                return fault_json(fault), 201
            return [fault_json(f) for f in found.faults]

    @route("/workspaces/<ws>/contacts/<uuid>/send", ["POST"])
    def send(ws: str, uuid: str) -> Any:
        return emit_webhook(state, ws, uuid)

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

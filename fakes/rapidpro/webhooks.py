"""Webhook bodies as a RapidPro-style engine POSTs them to the U-Partners ingest.

Part of the contract fake of the RapidPro API v2. Each builder is a pure function of a
:class:`WebhookContext` and returns ``(body, content_type)``; a ``None`` content type means the
request carries no Content-Type header at all (the classic editor's Call Webhook action).

Four shapes are produced (see docs for the ingest):

* ``editor``      - the editor's default body: contact, flow and the run's results only.
* ``resthook``    - the fixed resthook / migrated-legacy body: contact, flow (with revision), path,
  results, run, input (the message) and channel.
* ``upartners``   - the U-Partners template: ``resthook`` plus ``contact.groups``,
  ``contact.fields`` and ``node``.
* ``legacy_form`` - the pre-2017 form-encoded webhook, ``values`` and ``steps`` as JSON strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

#: Version announced in the ``User-Agent: Mailroom/<version>`` header.
MAILROOM_VERSION = "9.3.0"

#: The engine gives up on a webhook call after this many seconds.
WEBHOOK_TIMEOUT = 15.0

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class WebhookContext:
    """Everything a body shape may draw from; timestamps are RFC 3339 strings."""

    contact_uuid: str
    contact_name: str | None
    contact_urn: str  # as the engine shows it: may carry "#display", masked in anon workspaces
    flow_uuid: str
    flow_name: str
    node_uuid: str
    run_uuid: str
    run_created_on: str
    text: str = ""
    contact_language: str | None = None
    contact_groups: tuple[Mapping[str, str], ...] = ()  # ({"uuid", "name"}, ...)
    contact_fields: Mapping[str, Any] = field(default_factory=dict)
    flow_id: int = 0
    flow_revision: int = 1
    flow_base_language: str = "eng"
    run_id: int = 0
    path: tuple[Mapping[str, Any], ...] = ()  # ({"node_uuid", "arrived_on"}, ...); last = node
    message_uuid: str | None = None  # None: no message started this step, input is null
    message_created_on: str | None = None
    attachments: tuple[Mapping[str, str], ...] = ()  # ({"content_type", "url"}, ...)
    channel: Mapping[str, str] | None = None  # {"uuid", "name", "address"}
    channel_id: int = 0
    # key -> {"name", "value", "category", "node_uuid", "input", "created_on"}
    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def parse_urn(urn: str) -> dict[str, str | None]:
    """Split ``scheme:path#display`` into its parts, e.g. ``telegram:123#nick``."""
    scheme, _, rest = urn.partition(":")
    path, _, display = rest.partition("#")
    return {"scheme": scheme, "path": path, "display": display or None}


def _dump(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _contact(ctx: WebhookContext) -> dict[str, Any]:
    contact: dict[str, Any] = {
        "uuid": ctx.contact_uuid,
        "name": ctx.contact_name,
        "urn": ctx.contact_urn,
    }
    if ctx.contact_language:
        contact["language"] = ctx.contact_language
    return contact


def _input(ctx: WebhookContext) -> dict[str, Any] | None:
    if ctx.message_uuid is None:
        return None
    return {
        "uuid": ctx.message_uuid,
        "type": "msg",
        "text": ctx.text,
        "attachments": [dict(a) for a in ctx.attachments],
        "channel": dict(ctx.channel) if ctx.channel else None,
        "created_on": ctx.message_created_on,
        "urn": parse_urn(ctx.contact_urn),
    }


def _resthook_dict(ctx: WebhookContext) -> dict[str, Any]:
    return {
        "contact": _contact(ctx),
        "flow": {"uuid": ctx.flow_uuid, "name": ctx.flow_name, "revision": ctx.flow_revision},
        "path": [dict(step) for step in ctx.path],
        "results": {key: dict(result) for key, result in ctx.results.items()},
        "run": {"uuid": ctx.run_uuid, "created_on": ctx.run_created_on},
        "input": _input(ctx),
        "channel": dict(ctx.channel) if ctx.channel else None,
    }


def build_editor_body(ctx: WebhookContext) -> tuple[bytes, str | None]:
    """(a) The editor's default body; sent without a Content-Type header."""
    body = {
        "contact": {"uuid": ctx.contact_uuid, "name": ctx.contact_name, "urn": ctx.contact_urn},
        "flow": {"uuid": ctx.flow_uuid, "name": ctx.flow_name},
        "results": {
            key: {"value": result.get("value"), "category": result.get("category")}
            for key, result in ctx.results.items()
        },
    }
    return _dump(body), None


def build_resthook_body(ctx: WebhookContext) -> tuple[bytes, str | None]:
    """(b) The resthook / migrated-legacy body."""
    return _dump(_resthook_dict(ctx)), JSON


def build_upartners_body(ctx: WebhookContext) -> tuple[bytes, str | None]:
    """(c) The U-Partners template: (b) plus contact groups and fields, and the node."""
    body = _resthook_dict(ctx)
    body["contact"]["groups"] = [{"uuid": g["uuid"], "name": g["name"]} for g in ctx.contact_groups]
    body["contact"]["fields"] = dict(ctx.contact_fields)
    body["node"] = {"uuid": ctx.node_uuid}
    return _dump(body), JSON


def build_legacy_form_body(ctx: WebhookContext) -> tuple[bytes, str | None]:
    """(d) The legacy form-encoded webhook; ``values`` and ``steps`` are JSON strings."""
    urn = parse_urn(ctx.contact_urn)
    values = [
        {
            "node": result.get("node_uuid"),
            "category": {"base": result.get("category")},
            "text": result.get("input"),
            "rule_value": result.get("value"),
            "value": result.get("value"),
            "label": result.get("name"),
            "time": result.get("created_on"),
        }
        for result in ctx.results.values()
    ]
    steps = []
    for index, step in enumerate(ctx.path):
        last = index == len(ctx.path) - 1
        steps.append(
            {
                "node": step.get("node_uuid"),
                "arrived_on": step.get("arrived_on"),
                "left_on": None,
                "text": ctx.text if last else "",
                "type": "R" if last else "A",
                "value": ctx.text if last else None,
            }
        )
    fields: list[tuple[str, Any]] = [
        ("relayer", ctx.channel_id),
        ("channel", ctx.channel_id),
        ("channel_uuid", ctx.channel["uuid"] if ctx.channel else ""),
        ("flow", ctx.flow_id),
        ("flow_uuid", ctx.flow_uuid),
        ("flow_name", ctx.flow_name),
        ("flow_base_language", ctx.flow_base_language),
        ("run", ctx.run_id),
        ("step", ctx.node_uuid),
        ("text", ctx.text),
        ("phone", urn["path"] if urn["scheme"] == "tel" else ""),
        ("contact", ctx.contact_uuid),
        ("contact_name", ctx.contact_name or ""),
        ("urn", ctx.contact_urn),
        ("time", ctx.message_created_on or ctx.run_created_on),
        ("values", json.dumps(values)),
        ("steps", json.dumps(steps)),
    ]
    fields.extend(("attachments", f"{a['content_type']}:{a['url']}") for a in ctx.attachments)
    return urlencode(fields).encode("ascii"), FORM


BUILDERS: dict[str, Callable[[WebhookContext], tuple[bytes, str | None]]] = {
    "editor": build_editor_body,
    "resthook": build_resthook_body,
    "upartners": build_upartners_body,
    "legacy_form": build_legacy_form_body,
}


def mailroom_headers(*, simulation: bool = False) -> dict[str, str]:
    """The headers every webhook call carries, before the flow's own headers."""
    return {
        "User-Agent": f"Mailroom/{MAILROOM_VERSION}",
        "X-Mailroom-Mode": "simulation" if simulation else "normal",
    }

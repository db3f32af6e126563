"""HTTP only: read the webhook, check its credentials, call the handler, shape the answer."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from services.ingest import handlers
from services.ingest.domain import InvalidWebhook, parse_webhook
from services.ingest.handlers import Credentials
from shared.db import once_more_if_disconnected
from shared.http import ApiError
from shared.logs import log_context
from shared.uow import ServiceStore

log = logging.getLogger(__name__)

bp = Blueprint("ingest", __name__)


def _store() -> ServiceStore:
    return current_app.extensions["upartners.store"]


def _credentials() -> Credentials:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    token = value.strip() if scheme.lower() == "token" and value.strip() else None
    token = token or request.headers.get("X-UPartners-Token") or request.args.get("token")
    return Credentials(
        token=token,
        signature=request.headers.get("X-UPartners-Signature"),
        timestamp=request.headers.get("X-UPartners-Timestamp"),
        delivery_id=request.headers.get("X-UPartners-Delivery"),
    )


@bp.after_request
def _never_cached(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/webhooks/<org>/flow")
def receive_flow_webhook(org: str):
    raw_body = request.get_data(cache=False)  # bounded by MAX_CONTENT_LENGTH: 413 beyond it
    settings = current_app.config["UPARTNERS_SETTINGS"]
    secrets = current_app.extensions["upartners.secrets"]
    credentials = _credentials()
    # Both steps may be repeated: once more if the database restarted under the pool (no ping).
    if not once_more_if_disconnected(
        lambda: handlers.authenticate(
            secrets, org, credentials, raw_body, window=settings.signature_window
        )
    ):
        # One line, never the credentials: a flow engine with a stale secret shows up here.
        log.warning("refused a webhook for org %r: missing or invalid credentials", org[:64])
        raise ApiError(401, "UNAUTHORIZED", "Missing or invalid webhook credentials.")
    try:
        inbound = parse_webhook(
            raw_body, request.headers.get("Content-Type"), request.args.get("text", "")[:64]
        )
    except InvalidWebhook as exc:
        raise ApiError(400, "INVALID_WEBHOOK", str(exc), exc.fields) from exc
    simulation = request.headers.get("X-Mailroom-Mode", "").strip().lower() == "simulation"
    accepted = once_more_if_disconnected(
        lambda: handlers.accept_webhook(_store(), org, inbound, raw_body, simulation=simulation)
    )
    # The message id is the correlation id of every event this message causes.
    with log_context(correlation_id=accepted.message_id):
        log.debug(
            "accepted a webhook for %s as message %s%s",
            org,
            accepted.message_id,
            " (repeated delivery)" if accepted.duplicate else "",
        )
    return jsonify({"status": "accepted", "message": accepted.message_id})

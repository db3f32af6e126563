"""One JSON error shape for every HTTP service:
``{"error": CODE, "message": ..., "fields": {...}}``; the probes; and ``instrument``, which gives
a web app its request metrics, request ids in logs and answers, and ``/metrics``."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


def error_response(status: int, code: str, message: str, fields: dict[str, Any] | None = None):
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.fields)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").upper().replace(" ", "_")
        if exc.code == 413:
            code = "PAYLOAD_TOO_LARGE"
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    def _database_down(exc: Exception):
        # Never answer 2xx without a commit: the sender retries or routes to Failure.
        log.error("database unavailable: %s", str(exc).splitlines()[0][:200])
        response = error_response(503, "SERVICE_UNAVAILABLE", "The database is unavailable.")
        response[0].headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "INTERNAL_ERROR", "Something went wrong on our side.")


def health_blueprint() -> Blueprint:
    """``/healthz`` (the process answers) and ``/readyz`` (its database answers too)."""
    health = Blueprint("health", __name__)

    @health.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @health.get("/readyz")
    def readyz():
        # A database error becomes a 503 through the error handlers.
        current_app.extensions["upartners.store"].db.ping()
        return jsonify({"status": "ready"})

    return health


# --- observability ------------------------------------------------------------------------------
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id(presented: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a short safe token, else a new one: a UUID in
    its usual form, which the logs' redaction keeps (a bare hex id starting with eight digits
    came out of the logs as "[phone]...", and could no longer be searched for)."""
    if presented and REQUEST_ID.match(presented):
        return presented
    return str(uuid.uuid4())


def instrument(app: Flask, service: str) -> None:
    """Request metrics by url rule and status, a request id in the logs and in the answer
    (``X-Request-ID``), and ``/metrics``. Call it in ``create_app`` before the blueprints."""
    from shared import logs, metrics

    @app.before_request
    def _start() -> None:
        g.upartners_started = time.perf_counter()
        g.upartners_request_id = request_id(request.headers.get("X-Request-ID"))
        g.upartners_log_token = logs.push_context(correlation_id=g.upartners_request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else metrics.UNMATCHED
        method = request.method if request.method in METHODS else "other"
        started = g.get("upartners_started")
        metrics.HTTP_REQUESTS.labels(service, rule, method, str(response.status_code)).inc()
        if started is not None:
            metrics.HTTP_DURATION.labels(service, rule, method).observe(
                time.perf_counter() - started
            )
        if "upartners_request_id" in g:
            response.headers["X-Request-ID"] = g.upartners_request_id
        return response

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        token = g.pop("upartners_log_token", None)
        if token is not None:
            logs.pop_context(token)

    @app.get("/metrics", endpoint="metrics")
    def metrics_exposition() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

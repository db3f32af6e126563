"""One JSON error shape for every HTTP service:
``{"error": CODE, "message": ..., "fields": {...}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
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

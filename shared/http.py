"""One JSON error shape for every HTTP service:
``{"error": CODE, "message": ..., "fields": {...}}``; the probes; and ``instrument``, which gives
a web app its request metrics, request ids in logs and answers, and ``/metrics``."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler

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
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # What the exception says a client needs, e.g. ``Allow`` on a 405.
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response, status

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    def _database_down(exc: Exception):
        # Never answer 2xx without a commit: the sender retries or routes to Failure.
        log.error("database unavailable: %s", str(exc).splitlines()[0][:200])
        response = error_response(503, "SERVICE_UNAVAILABLE", "The database is unavailable.")
        response[0].headers["Retry-After"] = "5"
        return response

    app.register_error_handler(Exception, unexpected_error)


class BodyLimitedRequest(Request):
    """A request whose body is refused with 413 when over the app's ``MAX_CONTENT_LENGTH``,
    however it is framed.

    With a Content-Length werkzeug refuses it before reading. A chunked body has no length:
    werkzeug then stops reading at the limit and hands over what it read, so a valid document
    followed by any amount of padding passed as that document. Here the stream may run one byte
    past the limit, and a body that used it is refused."""

    @property
    def max_content_length(self) -> int | None:  # type: ignore[override]
        limit = super().max_content_length
        return None if limit is None else limit + 1

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False):  # type: ignore[override]
        data = super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        limit = super().max_content_length
        if limit is not None and len(data) > limit:
            raise RequestEntityTooLarge()
        return data.decode("utf-8", "replace") if as_text else data


def unexpected_error(_exc: Exception):
    """A bug: a 500 in the error shape, and the traceback in the log (never in the answer)."""
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
        # Every answer is what its Content-Type says: no browser may guess otherwise.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
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
        # Only on the ops port (UPARTNERS_OPS_PORT, a second listener of the same server): the
        # public port is for the flow engine and the partners, and the per-route counters are
        # nobody else's business. SERVER_PORT is the listener's own port, not the Host header.
        ops_port = current_app.config["UPARTNERS_SETTINGS"].ops_port
        if ops_port is None or request.environ.get("SERVER_PORT") != str(ops_port):
            raise NotFound()
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)


# --- answers the servers write themselves -------------------------------------------------------
def server_error_body(status: int, detail: str = "") -> bytes:
    """The one error shape, for answers a server writes before any app runs (a request line or
    headers it could not read, e.g. 431 or 414): JSON like every other answer, not HTML."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Bad Request"
    code = re.sub(r"[^A-Z]+", "_", phrase.upper()).strip("_")
    return json.dumps({"error": code, "message": detail or phrase}).encode()


class JsonErrorRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler (the embedded server's) with JSON instead of http.server's
    HTML page for the requests it refuses itself (headers too large: 431; line too long: 414;
    a request line it cannot parse: 400)."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None):
        self.log_error("code %d, message %s", code, message)
        body = server_error_body(code, message or "")
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()
        if getattr(self, "command", None) != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

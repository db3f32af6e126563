"""The small HTTP server of a worker or relay process: ``/healthz``, ``/readyz``, ``/metrics``.

Web processes answer the same paths on their own port; workers and relays have no HTTP server
of their own, so the composition root (services/cli.py) starts this one in a daemon thread when
an ops port is configured, and stops it on exit.

* ``/healthz``: 200 while the process's main loop turns (it records ``last_beat``, a
  ``time.monotonic()`` value, at least every few seconds, and after each handled message);
  503 once the beat is older than ``stale_after`` seconds: the loop is stuck, restart it.
* ``/readyz``: 200 when the database answers and the broker connection is up; 503 with the
  reason otherwise (wait: the process recovers by itself when they come back).
* ``/metrics``: the Prometheus text exposition (shared/metrics.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared import metrics

log = logging.getLogger(__name__)

STALE_AFTER = 60.0

# A check answers None when all is well, else a short reason (no URL, no secret).
Check = Callable[[], str | None]


def heartbeat(loop: Any, stale_after: float = STALE_AFTER) -> Check:
    """Liveness of a loop with a ``last_beat`` attribute."""

    def check() -> str | None:
        age = time.monotonic() - getattr(loop, "last_beat", time.monotonic())
        return f"main loop silent for {age:.0f}s" if age > stale_after else None

    return check


def database(stores: Iterable[Any]) -> Check:
    """Readiness of the processes' databases: each service store answers ``SELECT 1``."""
    unique = list({id(store.db): store for store in stores}.values())

    def check() -> str | None:
        for store in unique:
            try:
                store.db.ping()
            except Exception as exc:  # noqa: BLE001 (any failure means not ready)
                return f"database of {store.service} unavailable: {type(exc).__name__}"
        return None

    return check


def worker_readiness(worker: Any) -> Check:
    """A worker is ready when its databases answer and (on RabbitMQ) its connection is up."""
    databases = database(sub.store for sub in worker.subscriptions)

    def check() -> str | None:
        if (problem := databases()) is not None:
            return problem
        if getattr(worker, "broker_connected", True) is False:
            return "broker connection down"
        return None

    return check


def relay_readiness(relay: Any) -> Check:
    """A relay is ready when its database answers and its last publish attempt succeeded."""
    databases = database([relay.store])

    def check() -> str | None:
        if (problem := databases()) is not None:
            return problem
        if failing := getattr(relay, "failing", None):
            return f"publishing failed: {failing}"
        return None

    return check


class OpsServer:
    """``ThreadingHTTPServer`` in a daemon thread; ``start()`` binds, ``stop()`` releases."""

    def __init__(
        self,
        port: int,
        *,
        alive: Check,
        ready: Check,
        host: str = "0.0.0.0",
        registry: Any = None,
    ) -> None:
        self.alive, self.ready, self.registry = alive, ready, registry
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> OpsServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="ops-server",
            daemon=True,
        )
        self._thread.start()
        log.info("ops server on port %d (/healthz /readyz /metrics)", self.port)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # what each path answers: (status, content type, body)
    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            return _status(self.alive, "ok")
        if path == "/readyz":
            return _status(self.ready, "ready")
        if path == "/metrics":
            body, content_type = metrics.exposition(self.registry)
            return 200, content_type, body
        return 404, "application/json", b'{"error": "NOT_FOUND"}'


def _status(check: Check, good: str) -> tuple[int, str, bytes]:
    try:
        problem = check()
    except Exception as exc:  # noqa: BLE001 (a broken check is a failed check)
        problem = f"check failed: {type(exc).__name__}"
    if problem is None:
        return 200, "application/json", json.dumps({"status": good}).encode()
    body = {"status": "unavailable", "reason": problem}
    return 503, "application/json", json.dumps(body).encode()


def _handler_for(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "upartners-ops"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                status, content_type, body = ops.answer(self.path.split("?", 1)[0])
            except Exception:  # noqa: BLE001
                log.exception("ops request failed")
                status, content_type, body = 500, "application/json", b'{"error": "INTERNAL"}'
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            # http.server writes each request to stderr; one JSON log stream instead, quietly.
            log.debug("ops %s", format % args)

    return Handler

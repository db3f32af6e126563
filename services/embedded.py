"""The embedded default: every service in one process, on SQLite files and the embedded bus.

This is the composition root of ``upartners run``: the web apps share one HTTP server, and
each relay and worker runs in its own thread. Stopping (Ctrl-C or SIGTERM) lets each loop
finish the message or batch in hand.
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from collections.abc import Callable

from werkzeug.serving import make_server

from services import cli
from services.cases.app import create_app as create_cases_app
from services.ingest import handlers as ingest_handlers
from services.ingest.app import create_app as create_ingest_app
from shared.bus.embedded import EmbeddedBus, EmbeddedWorker
from shared.relay import Relay
from shared.settings import Settings

log = logging.getLogger(__name__)

DEMO_ORG = "demo"


def run_embedded(settings: Settings, *, host: str, port: int) -> int:
    if not settings.embedded_bus or settings.database_url:
        log.warning("`upartners run` is the embedded default; broker/database URLs are ignored")
        settings = settings.with_(broker_url=None, database_url=None)
    cli.migrate(settings)
    stores = {service: cli.models_of(service).open_store(settings) for service in cli.SERVICES}
    bus = EmbeddedBus(settings)
    if recovered := bus.recover():
        log.info("redelivering %d messages left in hand by the last run", recovered)

    loops: list = [
        Relay(store, bus, batch=settings.relay_batch, idle=settings.relay_idle)
        for store in stores.values()
    ]
    for service in cli.WORKERS:
        worker_module = importlib.import_module(f"services.{service}.worker")
        loops.append(EmbeddedWorker(bus, worker_module.subscriptions(settings, stores[service])))
    threads = [threading.Thread(target=loop.run, name=type(loop).__name__) for loop in loops]

    _print_demo_secret(stores["ingest"])
    app = _one_site(
        create_ingest_app(settings, stores["ingest"]),
        create_cases_app(settings, stores["cases"]),
    )
    server = make_server(host, port, app, threaded=True)
    _on_stop_signal(lambda: _stop(server, loops))
    for thread in threads:
        thread.start()
    print(f"U-Partners is running on http://{host}:{port} (data in {settings.data_dir}/)")
    print(f"  webhooks: POST http://{host}:{port}/webhooks/<org>/flow")
    print(f"  partner API: http://{host}:{port}/api/v1/ (create an org: upartners cases bootstrap)")
    try:
        server.serve_forever()
    finally:
        for loop in loops:
            loop.should_stop = True
        for thread in threads:
            thread.join()
        for store in stores.values():
            store.db.dispose()
    return 0


def _one_site(ingest_app, cases_app):
    """One HTTP server for both web services: /api/ is the cases API, the rest is ingest's."""

    def application(environ, start_response):
        app = cases_app if environ.get("PATH_INFO", "").startswith("/api/") else ingest_app
        return app(environ, start_response)

    return application


def _print_demo_secret(ingest_store) -> None:
    """First start: give the demo org a webhook secret, shown once, so curl works at once."""
    if ingest_handlers.list_secrets(ingest_store, DEMO_ORG):
        return
    _, secret = ingest_handlers.add_secret(ingest_store, DEMO_ORG)
    print(f"Created a webhook secret for the org {DEMO_ORG!r} (shown once):\n  {secret}")


def _stop(server, loops) -> None:
    for loop in loops:
        loop.should_stop = True
    # shutdown() waits for serve_forever() to return: call it from another thread.
    threading.Thread(target=server.shutdown, daemon=True).start()


def _on_stop_signal(callback: Callable[[], None]) -> None:
    def handler(_signum: int, _frame: object) -> None:
        callback()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

"""The embedded default: every service in one process, on SQLite files and the embedded bus.

This is the composition root of ``upartners run``: the web apps share one HTTP server, and
each relay and worker runs in its own thread. Unless told otherwise, the contract fake of the
flow engine (seeded "demo", its state kept in the data folder) serves on a port of its own, and
the first start sets up the demo org (services/demo.py) so that the README's curl commands work.
Stopping (Ctrl-C or SIGTERM) lets each loop finish the message or batch in hand.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

from werkzeug.serving import make_server

from fakes.rapidpro.app import create_app as create_fake_app
from fakes.rapidpro.seed import DEMO_TOKEN
from services import demo, registry
from services.cases.app import create_app as create_cases_app
from services.flowbridge.worker import rapidpro_client
from services.ingest.app import create_app as create_ingest_app
from shared import metrics, ops
from shared.bus.embedded import EmbeddedBus, EmbeddedWorker
from shared.http import JsonErrorRequestHandler
from shared.listening import stop_listening
from shared.relay import Relay
from shared.settings import Settings

log = logging.getLogger(__name__)

# How long the first start waits for the demo's configuration to reach every service.
SETTLE_SECONDS = 15.0
FAKE_STATE_FILE = "rapidpro-fake.json"


def run_embedded(settings: Settings, *, host: str, port: int, engine_port: int | None) -> int:
    """Serve until SIGTERM/SIGINT; ``engine_port`` None: without the contract fake."""
    if not settings.embedded_bus or settings.database_url:
        log.warning("`upartners run` is the embedded default; broker/database URLs are ignored")
        settings = settings.with_(broker_url=None, database_url=None)
    registry.migrate(settings)
    stores = {service.name: service.open_store(settings) for service in registry.SERVICES}
    metrics.watch_outboxes(stores.values())  # the backlog of every outbox on /metrics
    bus = EmbeddedBus(settings)
    if recovered := bus.recover():
        log.info("redelivering %d messages left in hand by the last run", recovered)

    relays = [
        Relay(store, bus, batch=settings.relay_batch, idle=settings.relay_idle)
        for store in stores.values()
    ]
    loops: list = list(relays)
    for name in registry.WORKERS:
        module = registry.service(name).worker_module()
        subscriptions = module.subscriptions(settings, stores[name])
        loops.append(EmbeddedWorker(bus, subscriptions, module.chores(settings, stores[name])))
    threads = [threading.Thread(target=loop.run, name=type(loop).__name__) for loop in loops]

    # Both ports are taken before anything is seeded: a busy port fails before secrets are shown.
    engine = _engine_server(settings, host, engine_port) if engine_port is not None else None
    app = _one_site(
        create_ingest_app(settings, stores["ingest"]),
        create_cases_app(settings, stores["cases"]),
    )
    server = make_server(host, port, app, threaded=True, request_handler=JsonErrorRequestHandler)
    _drain_before_close(server)
    _on_stop_signal(lambda: _stop(server, loops))
    ops_server = _ops_server(settings, stores) if settings.ops_port is not None else None
    engine_thread = _serve_in_thread(engine) if engine is not None else None
    engine_url = f"http://{host}:{engine.server_port}" if engine is not None else None
    try:
        seeded = demo.seed(
            stores, engine_url=engine_url, make_client=rapidpro_client, show=_shown()
        )
        if seeded:
            _publish_now(relays, bus)
        for thread in threads:
            thread.start()
        if seeded:
            _wait_until_handled(bus, settings)
        _print_banner(host, port, settings, engine_url)
        gc.freeze()  # as gunicorn's workers do once loaded (shared/gunicorn_hooks.py)
        server.serve_forever()
    finally:
        for loop in loops:
            loop.should_stop = True
        for thread in threads:
            if thread.is_alive():
                thread.join()
        if engine is not None and engine_thread is not None:
            engine.shutdown()
            engine.server_close()
            engine_thread.join()
        server.server_close()
        if ops_server is not None:
            ops_server.stop()
        bus.close()
        for store in stores.values():
            store.db.dispose()
    return 0


def _engine_server(settings: Settings, host: str, port: int):
    """The contract fake of the flow engine, seeded "demo", its state kept in the data folder."""
    state_file = settings.data_dir / FAKE_STATE_FILE
    return make_server(
        host, port, create_fake_app(seed="demo", state_file=state_file), threaded=True
    )


def _ops_server(settings: Settings, stores) -> ops.OpsServer:
    """/healthz, /readyz and /metrics (every service's, this process's one registry) on
    UPARTNERS_OPS_PORT, as a worker's; the public port does not serve /metrics."""
    assert settings.ops_port is not None
    ready = ops.database(stores.values())
    return ops.OpsServer(settings.ops_port, alive=lambda: None, ready=ready).start()


def _serve_in_thread(server) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="rapidpro-fake"
    )
    thread.start()
    return thread


def _shown() -> demo.Show:
    """Print what the first start created, as lines to paste into a shell."""
    shown: list[str] = []

    def show(variable: str, value: str, what: str) -> None:
        if not shown:
            print(f"First start: the org {demo.ORG!r} is set up. Keep these:")
        shown.append(variable)
        print(f"  export {variable}={value}    # {what}", flush=True)

    return show


def _publish_now(relays: list[Relay], bus: EmbeddedBus) -> None:
    """Put every event the seeding wrote on the bus (before the relay threads run)."""
    try:
        while sum([relay.relay_once() for relay in relays]):
            pass
    finally:
        bus.close()  # this thread's connection


def _wait_until_handled(bus: EmbeddedBus, settings: Settings) -> None:
    """Wait (bounded) until every queue is empty, so that the demo's labels and settings reached
    the services before the first webhook: it is labelled, and the first case suspends."""
    queues = [spec.name(settings.namespace) for spec in bus.queues]
    deadline = time.monotonic() + SETTLE_SECONDS
    try:
        while any(bus.depth(queue) for queue in queues):
            if time.monotonic() > deadline:
                log.warning("the demo's configuration is still on its way to the services")
                return
            time.sleep(0.05)
    finally:
        bus.close()


def _one_site(ingest_app, cases_app):
    """One HTTP server for both web services, split as the compose proxy splits them: the flow
    engine's /webhooks/ go to ingest (and its /healthz, /readyz), everything else (the pages at
    /, the API at /api/) to cases."""

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        to_ingest = path.startswith("/webhooks/") or path in ("/healthz", "/readyz")
        return (ingest_app if to_ingest else cases_app)(environ, start_response)

    return application


def _print_banner(host: str, port: int, settings: Settings, engine_url: str | None) -> None:
    site = f"http://{host}:{port}"
    print(f"U-Partners is running on {site} (data in {settings.data_dir}/)")
    print(f"  webhooks:    POST {site}/webhooks/<org>/flow (demo body: docs/demo/webhook.json)")
    print(f"  partner API: {site}/api/v1/ (docs/cases-api.md)")
    if engine_url is not None:
        print(
            f"  flow engine: {engine_url} (contract fake of the RapidPro API, token {DEMO_TOKEN})"
        )
    else:
        print("  flow engine: none; connect one with `upartners flowbridge connect --org demo ...`")
    sys.stdout.flush()


def _drain_before_close(server, grace: float = 5.0) -> None:
    """Make the server's stop graceful, as gunicorn's is: serve the connections still waiting
    in the listen backlog (closing the socket would reset them, a cut request for the sender),
    then wait up to ``grace`` seconds for the requests in flight (werkzeug's request threads
    are daemons: the exit would kill them mid-answer). Later connections are refused."""
    threads: list[threading.Thread] = []
    close = server.server_close

    def process_request(request, address) -> None:  # ThreadingMixIn's, keeping the threads
        thread = threading.Thread(
            target=server.process_request_thread, args=(request, address), daemon=True
        )
        threads[:] = [t for t in threads if t.is_alive()]
        threads.append(thread)
        thread.start()

    def drain_then_close() -> None:
        if server.socket.fileno() == -1:  # closed already (run_embedded closes it twice)
            return
        stop_listening(server.socket)  # nothing new joins the backlog from now on
        server.socket.setblocking(False)
        while True:
            try:
                request, address = server.get_request()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                break
            request.setblocking(True)
            server.process_request(request, address)
        close()
        deadline = time.monotonic() + grace  # an idle keep-alive connection waits this long
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    server.process_request = process_request
    server.server_close = drain_then_close


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

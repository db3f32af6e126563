"""The ``upartners`` command: one subcommand per process, plus operator tools.

This module is the composition root of the processes: it reads the settings once and hands
them to the service that starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from services.registry import NAMES, WEB, WORKERS, migrate, models_of, service
from shared.logs import configure_logging
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- db -----------------------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings, tuple(args.services) or NAMES)
    print("database is at the newest migration:", ", ".join(args.services or NAMES))
    return 0


def cmd_db_revision(args: argparse.Namespace, settings: Settings) -> int:
    """Autogenerate a migration from the models against a scratch SQLite database at head."""
    from alembic import command
    from alembic.config import Config

    models = models_of(args.service)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_settings = Settings(data_dir=Path(scratch))
        store = models.open_store(scratch_settings)
        store.db.migrate(models.MIGRATIONS)
        with store.db.engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(models.MIGRATIONS))
            config.attributes["connection"] = conn
            command.revision(config, message=args.message, autogenerate=True)
        store.db.dispose()
    return 0


# --- processes ----------------------------------------------------------------------------------
def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from shared import metrics, ops
    from shared.relay import Relay

    migrate(settings, (args.service,))
    store = models_of(args.service).open_store(settings, pre_ping=False)  # it retries
    relay = Relay(
        store, make_publisher(settings), batch=settings.relay_batch, idle=settings.relay_idle
    )
    stop_on_signals(relay)
    metrics.watch_outboxes([store])
    server = serve_ops(args, settings, relay, ops.relay_readiness(relay))
    logging.getLogger(__name__).info("relay of %s started", args.service)
    try:
        relay.run()
    finally:
        if server is not None:
            server.stop()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from shared import ops
    from shared.bus.runtime import make_worker

    migrate(settings, (args.service,))
    store = service(args.service).open_store(settings, pre_ping=False)  # handlers retry
    module = service(args.service).worker_module()
    worker = make_worker(
        settings, module.subscriptions(settings, store), module.chores(settings, store)
    )
    stop_on_signals(worker)
    server = serve_ops(args, settings, worker, ops.worker_readiness(worker))
    logging.getLogger(__name__).info("%s worker started", args.service)
    try:
        worker.run()
    finally:
        if server is not None:
            server.stop()
    return 0


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings, (args.service,))
    # The checkout's deploy/ folder, or the working directory's (the container's /app).
    candidates = [REPO_ROOT, Path.cwd()]
    configs = [p / "deploy" / "gunicorn" / f"{args.service}.py" for p in candidates]
    argv = [sys.executable, "-m", "gunicorn", "--bind", args.bind]
    ops_port = args.ops_port if args.ops_port is not None else settings.ops_port
    if ops_port is not None:
        # A second listener of the same gunicorn: /metrics answers there only (shared/http.py).
        host = args.bind.rsplit(":", 1)[0] if ":" in args.bind else "0.0.0.0"
        argv += ["--bind", f"{host}:{ops_port}"]
        os.environ["UPARTNERS_OPS_PORT"] = str(ops_port)  # the app's settings read it
    if config := next((c for c in configs if c.exists()), None):
        argv += ["--config", str(config)]
    argv.append(f"services.{args.service}.app:create_app()")
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # gunicorn's workers are processes: prometheus-client (reading this variable when it is
        # imported) keeps each one's values in files there, and /metrics sums them. A fresh
        # folder per start; the gunicorn config removes it on exit.
        from shared.gunicorn_hooks import fresh_metrics_dir

        metrics_dir = fresh_metrics_dir(args.service)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        os.environ["UPARTNERS_OWN_METRICS_DIR"] = metrics_dir
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_broker_setup(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bus.connection import declare_topology, kombu_connection

    if settings.embedded_bus:
        print("no UPARTNERS_BROKER_URL: the embedded bus needs no setup")
        return 0
    with kombu_connection(settings) as connection:
        declare_topology(connection, settings)
    print("RabbitMQ topology declared")
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from shared.bus import dlq

    return dlq.command(
        settings,
        args.dlq,
        queue=getattr(args, "queue", None),
        show=getattr(args, "show", 0),
        limit=getattr(args, "limit", None),
        yes=getattr(args, "yes", False),
    )


def probe(url: str, timeout: float) -> str | None:
    """GET ``url``: None on a 200, else a one-line reason. Stdlib only: the image has no curl."""
    import urllib.error
    import urllib.request

    # No proxy from the environment: the check is about this container's own port.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
        reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
        return f"{url} unreachable: {reason.splitlines()[0][:200]}"
    return None if status == 200 else f"{url} answered {status}"


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    """A container health check: exit 0 when the process's own HTTP port answers 200, else 1."""
    port = args.port if args.port is not None else settings.ops_port
    if port is None:
        print("no --port and no UPARTNERS_OPS_PORT: nothing to check", file=sys.stderr)
        return 1
    path = args.path if args.path.startswith("/") else f"/{args.path}"
    url = f"http://127.0.0.1:{port}{path}"
    if reason := probe(url, args.timeout):
        print(reason, file=sys.stderr)
        return 1
    print(f"{url} answered 200")
    return 0


def cmd_ingest_secret(args: argparse.Namespace, settings: Settings) -> int:
    from services.ingest import handlers

    migrate(settings, ("ingest",))
    store = models_of("ingest").open_store(settings)
    if args.action == "add":
        secret_id, secret = handlers.add_secret(store, args.org)
        print(f"secret {secret_id} for org {args.org} (shown once, store it in the flow engine):")
        print(secret)
    elif args.action == "list":
        for row in handlers.list_secrets(store, args.org):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            print(f"{row.id}  created {row.created_at:%Y-%m-%d %H:%M}  {state}")
    else:
        if not args.id or not handlers.revoke_secret(store, args.org, args.id):
            print("no such active secret", file=sys.stderr)
            return 1
        print(f"secret {args.id} revoked")
    return 0


def cmd_labeler_relabel(args: argparse.Namespace, settings: Settings) -> int:
    from services.labeler import handlers

    migrate(settings, ("labeler",))
    store = models_of("labeler").open_store(settings)
    report = handlers.relabel(store, args.org, args.days)
    print(f"examined {report.examined} messages, relabelled {report.changed}")
    return 0


def cmd_flowbridge(args: argparse.Namespace, settings: Settings) -> int:
    from services.flowbridge import handlers
    from services.flowbridge.flow_engine import FlowEngineError
    from services.flowbridge.worker import rapidpro_client

    migrate(settings, ("flowbridge",))
    store = models_of("flowbridge").open_store(settings)
    try:
        if args.flowbridge == "connect":
            token = sys.stdin.readline().strip() if args.token == "-" else args.token
            summary = handlers.connect_org(store, args.org, args.url, token, rapidpro_client)
        else:
            summary = handlers.sync_org(store, args.org, rapidpro_client)
    except (ValueError, LookupError, FlowEngineError) as exc:
        print(f"{args.org}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.db.dispose()
    print(
        f"{summary.org}: {summary.base_url} (token {summary.token_fingerprint}), "
        f"catalog synced: {summary.groups} groups, {summary.flows} flows"
    )
    return 0


def cmd_cases_rebuild_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Recount the statistics from history: once after upgrading an installation that has
    history, or whenever an operator doubts them (the live counts equal what this gives)."""
    from services.cases.handlers import statistics

    migrate(settings, ("cases",))
    store = models_of("cases").open_store(settings)
    try:
        rebuilt = statistics.rebuild(store, args.org)
    finally:
        store.db.dispose()
    for org, facts in rebuilt.items():
        print(f"{org}: {facts} facts counted from its history")
    return 0


def cmd_cases_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from services.cases import handlers
    from services.cases.domain import Conflict

    migrate(settings, ("cases",))
    store = models_of("cases").open_store(settings)
    try:
        user_id, token = handlers.bootstrap_org(
            store,
            org=args.org,
            name=args.name,
            admin_email=args.admin_email,
            admin_name=args.admin_name,
        )
    except (ValueError, Conflict) as exc:
        print(f"{args.org}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.db.dispose()
    print(f"org {args.org} ready; administrator {args.admin_email} ({user_id}).")
    print("API token (shown once; send it as 'Authorization: Bearer <token>'):")
    print(token)
    return 0


def cmd_cases_rebuild_counts(args: argparse.Namespace, settings: Settings) -> int:
    """Recount the folder counts from the messages (they are kept as messages change; this is
    for an operator who doubts them, or after rows were written around the service)."""
    from services.cases import handlers

    migrate(settings, ("cases",))
    store = models_of("cases").open_store(settings)
    try:
        rebuilt = handlers.rebuild_message_counts(store, args.org)
    finally:
        store.db.dispose()
    for org, rows in rebuilt.items():
        print(f"{org}: {rows} count rows rebuilt from its messages")
    return 0


def cmd_import_casepro(args: argparse.Namespace, settings: Settings) -> int:
    """Import an org from CasePro's database (read-only) or its tickets_migrate files."""
    from services.cases.casepro.migrate_files import MigrateExport, MigrateFileError
    from services.cases.casepro.source import CaseproDatabase, CaseproError
    from services.cases.domain import Conflict, Invalid
    from services.cases.handlers.importing import import_casepro

    if args.database_url and not args.org:
        print("--org is needed with --database-url: CasePro's org id or subdomain", file=sys.stderr)
        return 2
    migrate(settings, ("cases",))
    store = models_of("cases").open_store(settings)
    source = None
    try:
        if args.database_url:
            source = CaseproDatabase(args.database_url, args.org)
        else:
            agents = Path(args.agents_file) if args.agents_file else None
            source = MigrateExport(Path(args.cases_file), agents)
        report = import_casepro(
            store,
            source,
            args.into,
            merge=args.merge,
            dry_run=args.dry_run,
            history=not args.config_only,
            progress=lambda line: print(line, flush=True),
        )
    except (CaseproError, MigrateFileError, Conflict, Invalid, OSError) as exc:
        print(f"import refused: {exc}", file=sys.stderr)
        return 1
    finally:
        if isinstance(source, CaseproDatabase):
            source.close()
        store.db.dispose()
    print("\n".join(report.lines()))
    return 0


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from services.stack import Stack

    if not settings.database_url or not settings.broker_url:
        print("set UPARTNERS_DATABASE_URL and UPARTNERS_BROKER_URL", file=sys.stderr)
        return 2
    stack = Stack(
        settings,
        NAMES,
        WORKERS,
        base_port=args.base_port,
        with_fake=args.with_fake,
        log_dir=args.log_dir,
    )
    return stack.run_forever()


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from services.embedded import run_embedded

    engine_port = None if args.no_engine else args.engine_port or args.port + 2
    return run_embedded(settings, host=args.host, port=args.port, engine_port=engine_port)


# --- helpers ------------------------------------------------------------------------------------
def make_publisher(settings: Settings):
    if settings.embedded_bus:
        from shared.bus.embedded import EmbeddedBus

        return EmbeddedBus(settings)
    from shared.bus.publisher import ConfirmingPublisher

    return ConfirmingPublisher(settings)


OPS_PORT_HELP = "serve /healthz, /readyz and /metrics on this port (default: UPARTNERS_OPS_PORT)"


def serve_ops(args: argparse.Namespace, settings: Settings, loop: object, ready):
    """Start the ops HTTP server of a worker or relay if a port is set; the caller stops it."""
    port = args.ops_port if getattr(args, "ops_port", None) is not None else settings.ops_port
    if port is None:
        return None
    from shared.ops import OpsServer, heartbeat

    return OpsServer(port, alive=heartbeat(loop), ready=ready).start()


def stop_on_signals(*stoppables: object) -> None:
    """SIGTERM/SIGINT: let each loop finish what it holds, then return."""

    def _stop(_signum: int, _frame: object) -> None:
        for stoppable in stoppables:
            stoppable.should_stop = True  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="upartners", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="everything in one process on the embedded default")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--engine-port",
        type=int,
        help="the contract fake of the flow engine (default: --port + 2); the demo org stays "
        "connected to the port of its first start",
    )
    run.add_argument(
        "--no-engine", action="store_true", help="without the fake (to connect a real engine)"
    )
    run.set_defaults(func=cmd_run)

    stack = sub.add_parser("stack", help="every process on RabbitMQ and PostgreSQL, no Docker")
    stack.add_argument(
        "--base-port",
        type=int,
        default=8000,
        help="ingest on it, cases on +1, the fake engine on +2, ops ports of workers and "
        "relays on +3..+9 (services/stack.py)",
    )
    stack.add_argument(
        "--with-fake", action="store_true", help="also run the contract fake of the RapidPro API"
    )
    stack.add_argument("--log-dir", type=Path, help="one log file per process")
    stack.set_defaults(func=cmd_stack)

    web = sub.add_parser("web", help="an HTTP service under gunicorn")
    web.add_argument("service", choices=WEB)
    web.add_argument("--bind", default="0.0.0.0:8000")
    web.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)
    web.set_defaults(func=cmd_web)

    worker = sub.add_parser("worker", help="a service's event consumer")
    worker.add_argument("service", choices=WORKERS)
    worker.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)
    worker.set_defaults(func=cmd_worker)

    relay = sub.add_parser("relay", help="publish a service's outbox")
    relay.add_argument("service", choices=NAMES)
    relay.add_argument("--ops-port", type=int, help=OPS_PORT_HELP)
    relay.set_defaults(func=cmd_relay)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db", required=True)
    upgrade = db.add_parser("upgrade", help="migrate every (or the named) service to head")
    upgrade.add_argument("services", nargs="*", metavar="SERVICE")
    upgrade.set_defaults(func=cmd_db_upgrade)
    revision = db.add_parser("revision", help="autogenerate a migration for a service")
    revision.add_argument("service", choices=NAMES)
    revision.add_argument("-m", "--message", required=True)
    revision.set_defaults(func=cmd_db_revision)

    broker = sub.add_parser("broker", help="RabbitMQ tools").add_subparsers(
        dest="broker", required=True
    )
    broker.add_parser("setup", help="declare exchanges, queues and DLQs").set_defaults(
        func=cmd_broker_setup
    )

    dlq = sub.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="dlq", required=True)
    dlq_list = dlq.add_parser("list", help="each queue's dead messages")
    dlq_list.add_argument(
        "--show", type=int, default=0, metavar="N", help="also list up to N per queue (ids only)"
    )
    dlq_replay = dlq.add_parser("replay", help="send a queue's dead messages back to it")
    dlq_replay.add_argument("--limit", type=int, metavar="N", help="at most N messages")
    dlq_purge = dlq.add_parser("purge", help="delete a queue's dead messages")
    dlq_purge.add_argument("--yes", action="store_true", help="really delete them")
    for dlq_parser in (dlq_replay, dlq_purge):
        dlq_parser.add_argument("queue", help="e.g. labeler.messages")
    for dlq_parser in (dlq_list, dlq_replay, dlq_purge):
        dlq_parser.set_defaults(func=cmd_dlq)

    health = sub.add_parser("health", help="exit 0 if this container's process answers (Docker)")
    health.add_argument("--port", type=int, help="default: UPARTNERS_OPS_PORT")
    health.add_argument("--path", default="/healthz")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    health.set_defaults(func=cmd_health)

    ingest = sub.add_parser("ingest", help="ingest tools").add_subparsers(
        dest="ingest", required=True
    )
    secret = ingest.add_parser("secret", help="an org's webhook secrets")
    secret.add_argument("action", choices=["add", "list", "revoke"])
    secret.add_argument("--org", required=True)
    secret.add_argument("--id", help="the secret to revoke")
    secret.set_defaults(func=cmd_ingest_secret)

    labeler = sub.add_parser("labeler", help="labeler tools").add_subparsers(
        dest="labeler", required=True
    )
    relabel = labeler.add_parser("relabel", help="apply the current labels to recent messages")
    relabel.add_argument("--org", required=True)
    relabel.add_argument("--days", type=int, default=7)
    relabel.set_defaults(func=cmd_labeler_relabel)

    flowbridge = sub.add_parser("flowbridge", help="flowbridge tools").add_subparsers(
        dest="flowbridge", required=True
    )
    connect = flowbridge.add_parser(
        "connect", help="set an org's flow engine URL and API token, and sync its catalog"
    )
    connect.add_argument("--org", required=True)
    connect.add_argument("--url", required=True, help="e.g. https://rapidpro.example.org")
    connect.add_argument("--token", required=True, help="the API token ('-': read from stdin)")
    connect.set_defaults(func=cmd_flowbridge)
    sync = flowbridge.add_parser("sync", help="read an org's groups and flows again")
    sync.add_argument("--org", required=True)
    sync.set_defaults(func=cmd_flowbridge)
    cases = sub.add_parser("cases", help="cases tools").add_subparsers(dest="cases", required=True)
    bootstrap = cases.add_parser("bootstrap", help="create an org and its first administrator")
    bootstrap.add_argument("--org", required=True, help="the org key, as in /webhooks/<org>/flow")
    bootstrap.add_argument("--name", required=True, help="the org's name")
    bootstrap.add_argument("--admin-email", required=True)
    bootstrap.add_argument("--admin-name", help="default: the email's local part")
    bootstrap.set_defaults(func=cmd_cases_bootstrap)
    rebuild = cases.add_parser(
        "rebuild-counts", help="recount an org's (or every org's) folder counts from its messages"
    )
    rebuild.add_argument("--org", help="the org key (default: every org)")
    rebuild.set_defaults(func=cmd_cases_rebuild_counts)
    stats = cases.add_parser(
        "rebuild-stats", help="recount an org's (or every org's) statistics from its history"
    )
    stats.add_argument("--org", help="the org key (default: every org)")
    stats.set_defaults(func=cmd_cases_rebuild_stats)
    importing = sub.add_parser("import", help="bring an org over from another system")
    casepro = importing.add_subparsers(dest="importing", required=True).add_parser(
        "casepro",
        help="import an org from CasePro: its database (read-only) or its tickets_migrate files",
    )
    where = casepro.add_mutually_exclusive_group(required=True)
    where.add_argument("--database-url", help="CasePro's PostgreSQL, e.g. postgresql://...")
    where.add_argument("--cases-file", help="tickets_migrate's <Org>_cases.json")
    casepro.add_argument("--agents-file", help="tickets_migrate's <Org>_agents.csv")
    casepro.add_argument("--org", help="CasePro's org: its id or subdomain (with --database-url)")
    casepro.add_argument("--into", required=True, help="the org key here")
    casepro.add_argument(
        "--config-only",
        action="store_true",
        help="settings, labels, partners, users and answers only: no contacts, messages, "
        "replies or cases",
    )
    casepro.add_argument("--dry-run", action="store_true", help="report what it would import")
    casepro.add_argument("--merge", action="store_true", help="import into an org that has data")
    casepro.set_defaults(func=cmd_import_casepro)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings, process_name(args))
    return args.func(args, settings)


def process_name(args: argparse.Namespace) -> str:
    """The "process" of its log lines: web-ingest, worker-labeler, relay-cases, run, ..."""
    if args.command in ("web", "worker", "relay"):
        return f"{args.command}-{args.service}"
    return str(args.command)


if __name__ == "__main__":
    sys.exit(main())

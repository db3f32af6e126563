"""CPU per webhook of the ingest web process at a fixed rate, beside its two anchors under the
same gunicorn settings (deploy/gunicorn/ingest.py): the bare Flask endpoint and the durable one
(INSERT + commit, bench/durable_app.py).

At a trickle a web process spends much of its CPU on waking up for each request (gunicorn's
gthread loop hands a connection to a thread and back), not on the request: this says how much
of the ingest's CPU per message (bench/pipeline.py's largest part after the cases worker) is
that floor, and how much is ingest's own work. Each server runs alone, on PostgreSQL, its
webhooks sent open loop from a separate process; CPU from /proc (gunicorn's master and workers).

    .venv/bin/python bench/web_cpu.py [--rate 100] [--seconds 15] [--rounds 2]

``UPARTNERS_WEB_WORKERS`` and ``UPARTNERS_WEB_THREADS`` in the environment apply to all three.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import pipeline  # noqa: E402
from bench.ingest import free_port, wait_until_up  # noqa: E402

PLAIN = {"Content-Type": "application/json", "User-Agent": "Mailroom/9.3.0"}


def start(kind: str, settings, env: dict[str, str], logs: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if kind == "bare":
        return pipeline.bare_endpoint(port, env, logs / "bare.log"), port
    if kind == "durable":
        app = "bench.durable_app:create_app()"
        return pipeline.bare_endpoint(port, env, logs / "durable.log", app), port
    command = [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn/ingest.py"]
    command += ["--bind", f"127.0.0.1:{port}", "services.ingest.app:create_app()"]
    with (logs / "ingest.log").open("ab") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    wait_until_up(port, process)
    return process, port


def measure(kind, settings, env, logs, headers, rate, seconds, offset) -> tuple[float, float]:
    """(CPU ms per accepted webhook, HTTP p99 ms) of one server at ``rate``."""
    process, port = start(kind, settings, env, logs)
    try:
        url = f"http://127.0.0.1:{port}/webhooks/{pipeline.ORG}/flow"
        pipeline.in_other_process(pipeline.drive, url, headers, 50.0, 2.0, offset)  # warm up
        before = pipeline.tree_cpu(process.pid, pipeline.children_of_all())
        result, _, _ = pipeline.in_other_process(
            pipeline.drive, url, headers, rate, seconds, offset + (1 << 20)
        )
        used = pipeline.tree_cpu(process.pid, pipeline.children_of_all()) - before
        if result.errors or not result.ok:
            raise RuntimeError(f"{kind}: {result.errors} errors, {result.ok} accepted")
        return 1000 * used / result.ok, result.percentile(99)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="each server this many times")
    args = parser.parse_args()
    from services import registry
    from services.ingest import handlers
    from services.ingest.models import open_store
    from services.stack import Stack, drop_namespace
    from shared.settings import Settings

    settings = Settings(
        database_url=pipeline.DATABASE_URL,
        broker_url=pipeline.BROKER_URL,
        namespace=f"bench{uuid.uuid4().hex[:6]}",
    )
    logs = Path(tempfile.mkdtemp(prefix="upartners-web-cpu-"))
    env = Stack(settings, registry.NAMES, registry.WORKERS, log_dir=logs).environment()
    env.update({k: v for k, v in os.environ.items() if k.startswith("UPARTNERS_WEB_")})
    store = None
    try:
        pipeline.create_durable_table(settings)
        registry.migrate(settings, ("ingest",))
        store = open_store(settings)
        _, secret = handlers.add_secret(store, pipeline.ORG)
        headers = {"bare": PLAIN, "durable": PLAIN}
        headers["ingest"] = {**PLAIN, "Authorization": f"Token {secret}"}
        found: dict[str, list[tuple[float, float]]] = {kind: [] for kind in headers}
        for round_ in range(args.rounds):
            for k, kind in enumerate(headers):
                offset = (round_ * 3 + k + 1) << 24
                found[kind].append(
                    measure(
                        kind, settings, env, logs, headers[kind], args.rate, args.seconds, offset
                    )
                )
        print(
            f"CPU per webhook at {args.rate:.0f}/s, {args.seconds:.0f} s a run, "
            f"{args.rounds} rounds; {pipeline.environment(settings, env, 1)}"
        )
        print("| server | CPU per webhook (each round) | HTTP p99 (each round) |")
        print("|---|---|---|")
        for kind, runs in found.items():
            cpu = ", ".join(f"{c:.2f} ms" for c, _ in runs)
            p99 = ", ".join(f"{p:.1f} ms" for _, p in runs)
            print(f"| {kind} | {cpu} | {p99} |")
    finally:
        if store is not None:
            store.db.dispose()
        drop_namespace(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

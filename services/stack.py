"""``upartners stack``: every process of the product on RabbitMQ and PostgreSQL, without Docker.

Starts the web processes (gunicorn), one worker per consuming service, one relay per service,
and optionally the contract fake of the flow engine; stops them all (SIGTERM, by process id)
when interrupted or when one of them dies. The end-to-end tests start the same processes.

Ports, counted from ``base_port``: ingest +0, cases +1, the fake flow engine +2; then each
process's ops port (``/healthz``, ``/readyz``, ``/metrics``, passed to that process alone as
UPARTNERS_OPS_PORT): worker-labeler +3, worker-flowbridge +4, worker-cases +5, relay-ingest
+6, relay-labeler +7, relay-flowbridge +8, relay-cases +9, web-ingest +10, web-cases +11.
Twelve ports in all (``PORTS``), whichever processes run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.registry import WEB, migrate
from shared.settings import Settings

OFFSETS = {
    "ingest": 0,
    "cases": 1,
    "fake": 2,
    "worker-labeler": 3,
    "worker-flowbridge": 4,
    "worker-cases": 5,
    "relay-ingest": 6,
    "relay-labeler": 7,
    "relay-flowbridge": 8,
    "relay-cases": 9,
    "web-ingest": 10,
    "web-cases": 11,
}
PORTS = len(OFFSETS)
OPS_PROCESSES = ("worker-", "relay-", "web-")


@dataclass
class Stack:
    settings: Settings
    services: Sequence[str]
    workers: Sequence[str]
    base_port: int = 8000
    with_fake: bool = False
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # Variables for every process on top of the settings' (e.g. UPARTNERS_LOG_LEVEL).
    extra_env: dict[str, str] = field(default_factory=dict)

    def port_of(self, name: str) -> int:
        """The port of a web service ("ingest", "cases"), "fake", or a worker's or relay's
        ops server ("worker-labeler", "relay-ingest", ...)."""
        return self.base_port + OFFSETS[name]

    def url_of(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port_of(name)}"

    def ops_url_of(self, name: str) -> str:
        """``/healthz``, ``/readyz``, ``/metrics`` of a process, e.g. "worker-labeler",
        "web-cases"."""
        if not name.startswith(OPS_PROCESSES):
            raise ValueError(f"{name} has no ops port")
        return self.url_of(name)

    def process_environment(self, name: str) -> dict[str, str]:
        """What one process gets on top of ``environment()``: its ops port."""
        if name.startswith(OPS_PROCESSES):
            return {"UPARTNERS_OPS_PORT": str(self.port_of(name))}
        return {}

    def commands(self) -> dict[str, list[str]]:
        cli = [sys.executable, "-m", "services.cli"]
        commands = {
            f"web-{service}": [*cli, "web", service, "--bind", f"127.0.0.1:{self.port_of(service)}"]
            for service in WEB
            if service in self.services
        }
        commands |= {f"worker-{service}": [*cli, "worker", service] for service in self.workers}
        commands |= {f"relay-{service}": [*cli, "relay", service] for service in self.services}
        if self.with_fake:
            commands["fake"] = [
                sys.executable,
                "-m",
                "fakes.rapidpro",
                "--seed",
                "demo",
                "--port",
                str(self.port_of("fake")),
            ]
        return commands

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "UPARTNERS_DATABASE_URL": self.settings.database_url or "",
                "UPARTNERS_BROKER_URL": self.settings.broker_url or "",
                "UPARTNERS_NAMESPACE": self.settings.namespace,
                "UPARTNERS_RELAY_IDLE": str(self.settings.relay_idle),
                "UPARTNERS_DELIVERY_LIMIT": str(self.settings.delivery_limit),
                "UPARTNERS_WEB_WORKERS": env.get("UPARTNERS_WEB_WORKERS", "2"),
            }
        )
        env.pop("UPARTNERS_OPS_PORT", None)  # one per process (process_environment), never shared
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0) -> None:
        migrate(self.settings, tuple(self.services))  # once, before the processes race to it
        env = self.environment()
        for name, command in self.commands().items():
            self._spawn(name, command, env)
        ports = [self.port_of(s) for s in WEB if s in self.services]
        ports += [self.port_of("fake")] if self.with_fake else []
        ports += [self.port_of(name) for name in self.processes if self.process_environment(name)]
        deadline = time.monotonic() + timeout
        for port in ports:
            while not _answers(port):
                if time.monotonic() > deadline or self.dead():
                    self.stop()
                    raise RuntimeError(f"the stack did not start (port {port}); see logs")
                time.sleep(0.1)

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        output = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            command,
            env={**env, **self.process_environment(name)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        if output is not subprocess.DEVNULL:
            output.close()  # the child has its own copy

    def dead(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def kill(self, name: str) -> None:
        """SIGKILL one process (a crash: no cleanup at all); the fault tests use it."""
        process = self.processes[name]
        process.kill()
        process.wait()

    def restart(self, name: str) -> None:
        """Start one process again with its command, as a supervisor would after a crash."""
        if self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is still running")
        self._spawn(name, self.commands()[name], self.environment())

    def stop(self, timeout: float = 30.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def run_forever(self) -> int:
        stopping = False

        def on_signal(_signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        for name, command in self.commands().items():
            ops = f" (ops :{self.port_of(name)})" if self.process_environment(name) else ""
            print(f"{name:<18} pid {self.processes[name].pid:<7} {' '.join(command[1:])}{ops}")
        try:
            while not stopping:
                if dead := self.dead():
                    print(f"stopping everything: {', '.join(dead)} exited", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        finally:
            self.stop()
        return 0


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def free_base_port() -> int:
    """A base port whose whole run of ``PORTS`` ports is free, for tests and benchmarks.

    Picked below the kernel's ephemeral range: a port chosen there can be taken by any outgoing
    connection (the load generator's thousands of them) before the process binds it.
    """
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            low = int(ranges.read().split()[0])
    except OSError:  # not Linux: IANA's ephemeral range
        low = 49152
    for _ in range(100):
        base = random.randrange(max(1024, low - 12_000), low - PORTS)
        try:
            for port in range(base, base + PORTS):
                with socket.socket() as sock:
                    sock.bind(("0.0.0.0", port))  # the ops servers listen on every interface
        except OSError:
            continue
        return base
    raise RuntimeError(f"no run of {PORTS} free ports")


def drop_namespace(settings: Settings) -> None:
    """Remove a namespace's schemas and queues: tests and benchmarks run stacks in throwaway
    namespaces. The broker may be down after a fault; its leftovers are then skipped."""
    import contextlib

    import sqlalchemy as sa

    from shared.bus.connection import delete_topology

    engine = sa.create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            schemas = conn.execute(
                sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                {"p": f"{settings.namespace}\\_%"},
            ).scalars()
            for schema in list(schemas):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()
    with contextlib.suppress(Exception):
        delete_topology(settings)

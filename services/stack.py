"""``upartners stack``: every process of the product on RabbitMQ and PostgreSQL, without Docker.

Starts the web processes (gunicorn), one worker per consuming service, one relay per service,
and optionally the contract fake of the flow engine; stops them all (SIGTERM, by process id)
when interrupted or when one of them dies. The end-to-end tests start the same processes.
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

from shared.settings import Settings

WEB_SERVICES = ("ingest", "cases")


@dataclass
class Stack:
    settings: Settings
    services: Sequence[str]
    workers: Sequence[str]
    base_port: int = 8000
    with_fake: bool = False
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def port_of(self, name: str) -> int:
        return self.base_port + {"ingest": 0, "cases": 1, "fake": 2}[name]

    def url_of(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port_of(name)}"

    def commands(self) -> dict[str, list[str]]:
        cli = [sys.executable, "-m", "services.cli"]
        commands = {
            f"web-{service}": [*cli, "web", service, "--bind", f"127.0.0.1:{self.port_of(service)}"]
            for service in WEB_SERVICES
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
        return env

    def start(self, timeout: float = 60.0) -> None:
        from services.cli import migrate

        migrate(self.settings, tuple(self.services))  # once, before the processes race to it
        env = self.environment()
        for name, command in self.commands().items():
            output = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                output = (self.log_dir / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                command, env=env, stdout=output, stderr=subprocess.STDOUT
            )
            if output is not subprocess.DEVNULL:
                output.close()  # the child has its own copy
        ports = [self.port_of(s) for s in WEB_SERVICES if s in self.services]
        ports += [self.port_of("fake")] if self.with_fake else []
        deadline = time.monotonic() + timeout
        for port in ports:
            while not _answers(port):
                if time.monotonic() > deadline or self.dead():
                    self.stop()
                    raise RuntimeError(f"the stack did not start (port {port}); see logs")
                time.sleep(0.1)

    def dead(self) -> list[str]:
        return [name for name, p in self.processes.items() if p.poll() is not None]

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
            print(f"{name:<18} pid {self.processes[name].pid:<7} {' '.join(command[1:])}")
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

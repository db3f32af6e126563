"""Private PostgreSQL and RabbitMQ servers for the fault tests.

The fault tests stop, restart and kill their servers. The machine's shared servers must keep
serving the other tests, so each fault session starts its own PostgreSQL cluster and its own
RabbitMQ node in temporary folders on free ports, and removes them afterwards: every process is
found and stopped by its process id, never by name.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_BIN = Path(os.environ.get("UPARTNERS_FAULT_PG_BIN", "/usr/lib/postgresql/15/bin"))
RABBITMQ_BIN = Path(os.environ.get("UPARTNERS_FAULT_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
# Set to keep the servers' folders (data and logs) after the session, to read why a test failed.
KEEP = os.environ.get("UPARTNERS_FAULT_KEEP", "") not in ("", "0")


def _remove(folder: Path) -> None:
    if KEEP:
        print(f"\nkept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


class ServerError(RuntimeError):
    """A private server did not start or stop as asked."""


def free_port() -> int:
    return free_base_port(1)


def free_base_port(count: int) -> int:
    """A port with the ``count - 1`` ports after it free too (a Stack's ports).

    Chosen below the kernel's ephemeral range: a port from that range (what binding to port 0
    gives) can be taken meanwhile by any outgoing connection, e.g. a worker's to PostgreSQL,
    before our server binds it.
    """
    low = max(_ephemeral_low(), 20000)
    for _ in range(200):
        base = random.randrange(10000, low - count)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise ServerError(f"no {count} free ports in a row")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str) -> float:
    """Poll ``condition`` until true; return the seconds it took (ServerError past timeout)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise ServerError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_pid(pid: int | None, timeout: float = 10.0) -> None:
    """SIGKILL one process by id and wait until it is gone."""
    if pid is None or not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ServerError):
        wait_for(lambda: not pid_alive(pid), timeout, f"process {pid} to die")


def _run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ServerError(f"{' '.join(command[:3])}... exited {result.returncode}: {result.stderr}")
    return result.stdout


def _as_postgres(*command: str) -> list[str]:
    # initdb refuses to run as root: the cluster belongs to the postgres user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


class PrivatePostgres:
    """A PostgreSQL cluster of our own: trust auth, 127.0.0.1:<free port>, socket in its folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="upfault-pg-"))
        self.root.chmod(0o755)  # the postgres user must reach its folders inside
        self.data, self.sockets, self.logs = (self.root / n for n in ("data", "sock", "log"))
        self.port = free_port()
        self.running = False

    @staticmethod
    def available() -> bool:
        return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or shutil.which("runuser"))

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        for folder in (self.data, self.sockets, self.logs):
            folder.mkdir(mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(folder, "postgres", "postgres")
        _run(
            _as_postgres(
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            )
        )
        self.start()

    def _ctl(self, *args: str, timeout: float = 60.0) -> None:
        _run(_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args), timeout=timeout)

    def start(self) -> None:
        """Start the cluster and return once it accepts connections (``pg_ctl -w``)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c max_connections=200"
        )
        self._ctl("-l", str(self.logs / "postgresql.log"), "-w", "-t", "60", "-o", options, "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions, close every connection, shut down cleanly."""
        self._ctl("-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def close(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None and pid_alive(pid):
            try:
                self.stop("fast")
            except (ServerError, subprocess.TimeoutExpired):
                kill_pid(pid)
        _remove(self.root)


class PrivateRabbit:
    """A second RabbitMQ node on this machine: its own name, ports, cookie, data and config.

    It runs as the current user straight from the versioned scripts (the Debian wrapper in
    /usr/sbin would switch to the rabbitmq user and its home, the shared node's cookie). HOME
    points at the node's folder, so the node and our rabbitmqctl calls share a private cookie;
    the config file names our port, so the shared node's ``listeners.tcp`` setting is not read.
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="upfault-rmq-"))
        self.node = f"upfault{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.pid_file = self.root / "rabbitmq.pid"

    @staticmethod
    def available() -> bool:
        return (RABBITMQ_BIN / "rabbitmq-server").exists()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def environment(self) -> dict[str, str]:
        root = self.root
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(root),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            # Erlang distribution on loopback only, as the shared node does.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(root / "plugins-expand"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        }

    def init(self) -> None:
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self.start()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        command = [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args]
        return _run(command, env=self.environment(), timeout=timeout)

    def start(self, timeout: float = 60.0) -> float:
        """Start the node (again, on the same data); return once AMQP clients may connect."""
        if self.pid() is not None:
            raise ServerError(f"node {self.node} is already running")
        self.pid_file.unlink(missing_ok=True)
        started = time.monotonic()
        _run([str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], env=self.environment())
        wait_for(self.pid_file.exists, timeout, "the node's pid file")
        self.wait_until_serving(timeout)
        return time.monotonic() - started

    def wait_until_serving(self, timeout: float = 60.0) -> None:
        wait_for(lambda: answers(self.port), timeout, f"node {self.node} to listen")
        self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)

    def pid(self) -> int | None:
        """The beam.smp process of the node, if it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_until_serving()

    def messages(self, queues: list[str]) -> dict[str, tuple[int, int]]:
        """(ready, unacknowledged) of quorum queues of vhost /, read from their Raft state.

        ``rabbitmqctl list_queues`` serves cached metrics that can stay wrong for a while after a
        restart (we saw zeros for full queues, and the opposite); a queue's own state cannot.
        """
        names = ", ".join(f'<<"{queue}">>' for queue in queues)
        query = (
            "lists:foreach(fun(Q) -> "
            '{ok, {_, O}, _} = ra:local_query({binary_to_atom(<<"%2F_", Q/binary>>), node()}, '
            "fun rabbit_fifo:overview/1), "
            'io:format("~s ~b ~b~n", [Q, maps:get(num_ready_messages, O), '
            f"maps:get(num_checked_out, O)]) end, [{names}])."
        )
        found = {}
        for line in self.ctl("eval", query).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                found[parts[0]] = (int(parts[1]), int(parts[2]))
        return found

    def kill(self) -> None:
        """``kill -9`` of the node's Erlang VM: no shutdown at all, like a power cut of it."""
        pid = self.pid()
        if pid is None:
            raise ServerError(f"node {self.node} does not run")
        kill_pid(pid)

    def close(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=60)
            if _is_beam(pid):
                kill_pid(pid)  # only if `stop` left it running
        _remove(self.root)


def _is_beam(pid: int) -> bool:
    """Still the Erlang VM we started (and not a new process that reused its id)?"""
    try:
        return b"beam" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False

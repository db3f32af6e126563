"""Benchmark of the whole pipeline: every process on RabbitMQ and PostgreSQL, as in production.

Measures, in one run and one namespace of its own (schemas and queues dropped at the end):

- a bare Flask endpoint's rate under the same gunicorn settings, a *durable* one's (the raw body
  inserted into one table and committed before the answer, bench/durable_app.py: what any
  receiver that never answers 2xx before a commit must do), and a bare confirmed-publish rate to
  a scratch quorum queue: what the machine gives without the product;
- the *skeleton* pipeline (bench/skeleton.py: the same processes, commits, relays and quorum
  queues with none of the product's own work) at the first rate, for its CPU per message: the
  anchor of the headline figure (``--no-skeleton`` leaves it out);
- webhook -> labelled in the partner inbox, open loop at fixed rates: accepted/s, errors, how
  many made it and the latency percentiles;
- a backlog: ingest at full speed with the relay and the workers stopped, then the ingest relay
  alone (its publish rate), then the labeler and cases workers (time until every message is
  labelled in the inbox, with and without their start-up).

"Labelled in the inbox" is what a partner would see: the cases service has committed the message
(received, not archived, not a simulation) with its label. The cases tables keep no commit time,
so this script polls them every ``--poll`` seconds and takes the moment of the first poll that
sees a message; the latency is that moment minus the webhook's scheduled send time (open loop:
the same as the actual send time unless the load generator fell behind, which is reported),
both read from the machine's wall clock. It is an upper bound, late by at most one poll interval
plus one query. When the inbox falls behind, the interval grows with the age of the oldest
message not seen yet (``LAG_PRECISION`` of it): each look reads every message from that one on,
so looks every 10 ms at a lag of seconds cost more and more of the cores they measure (at 300/s
on a machine that could not keep up: 10% of a core for this script and 16% for its PostgreSQL
backend, p99 20.6 s; 8.2 s in a run polling every 50 ms).

Below the tables: each process's CPU use per phase (from /proc, so a worker that is slow while
far from 100% of a core is waiting, mostly on PostgreSQL) and the whole machine's, to tell a
busy machine from a slow pipeline. ``--profile DIR`` adds py-spy profiles of every process.

    .venv/bin/python bench/pipeline.py [--quick] [--rates 100 300] [--seconds 20] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import loadgen  # noqa: E402
from bench.ingest import BROKER_URL, DATABASE_URL, free_port, wait_until_up  # noqa: E402

ORG = "bench"
CONSUMERS = ("worker-labeler", "worker-cases")
TARGET_P99_MS = 250.0  # at 100 webhooks/s; CasePro polled the flow engine every minute
TARGET_BACKLOG_S = 10.0  # 10,000 messages
SCRATCH_KEY = "bench.scratch"
# The backlog's end is found by counting the inbox, a query over up to 10,000 rows: every 20 ms
# it took a fifth of a core of PostgreSQL from the workers it measured, every 100 ms 11 to 13%
# of one. It counts every 100 ms or every LAG_PRECISION of the time since the workers started,
# whichever is longer (late by at most that plus 0.1 s: 0.4 s at 15 s; its backend still took
# 9 to 10% of a core in session 12's runs, each count reading every row of the backlog), and
# the labeler's table (no index for it) every 500 ms.
BACKLOG_POLL, LABELER_POLL = 0.1, 0.5
# Behind, the inbox is polled every LAG_PRECISION of the oldest unseen message's age, if that is
# longer than --poll: a latency is then late by at most that share of itself (see above).
LAG_PRECISION = 0.02


# --- webhooks -----------------------------------------------------------------------------------
@functools.cache
def _template() -> dict:
    return json.loads((REPO / "tests/fixtures/webhooks/resthook.json").read_text())


def external_id(n: int) -> str:
    """The flow engine's message uuid of webhook ``n``: the cases message's external_id."""
    return str(uuid.UUID(int=n + 1))


def webhook(n: int) -> bytes:
    """The resthook fixture (its text matches the bench label's keyword), one contact per five
    messages, each with its own message uuid."""
    body = json.loads(json.dumps(_template()))
    body["input"]["uuid"] = external_id(n)
    body["contact"]["uuid"] = str(uuid.UUID(int=(1 << 100) + n // 5))
    return json.dumps(body).encode()


def drive(url: str, headers: dict, rate: float, seconds: float, offset: int):
    """Run in its own process: the load generator, plus when each webhook was actually sent."""
    sent: dict[int, float] = {}

    def body(i: int) -> bytes:
        sent[i] = time.time()
        return webhook(offset + i)

    started = time.time()
    result = loadgen.run(url, body, headers, rate=rate, seconds=seconds)
    return result, started, sent


def burst(url: str, headers: dict, count: int, offset: int) -> loadgen.Result:
    """``count`` webhooks as fast as 32 connections take them (all scheduled within a second:
    a server faster than ``count`` a second shows as ``count`` a second, see ``rate_text``)."""
    result, _, _ = in_other_process(drive, url, headers, float(count), 1.0, offset)
    return result


def bare_endpoint(
    port: int, env: dict[str, str], log: Path, app: str = "bench.bare_app:create_app()"
) -> subprocess.Popen:
    """An anchor app (bench/bare_app.py, bench/durable_app.py) under the ingest's gunicorn
    settings (deploy/gunicorn/ingest.py)."""
    config = REPO / "deploy/gunicorn/ingest.py"
    command = [sys.executable, "-m", "gunicorn", "--config", str(config)]
    command += ["--bind", f"127.0.0.1:{port}", app]
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    wait_until_up(port, process)
    return process


def create_durable_table(settings) -> None:
    """The durable anchor's table (bench/durable_app.py); its schema goes with the namespace
    (drop_namespace)."""
    import psycopg

    from bench.durable_app import SCHEMA_SUFFIX, table

    url = settings.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{settings.namespace}{SCHEMA_SUFFIX}"')
        conn.execute(
            f"CREATE TABLE {table(settings.namespace)} (id bigserial PRIMARY KEY, body bytea)"
        )


def durable_rate(settings, env: dict[str, str], logs: Path, headers: dict, count: int):
    """The durable anchor (bench/durable_app.py: the raw body inserted and committed before the
    answer) driven like the bare one."""
    create_durable_table(settings)
    port = free_port()
    process = bare_endpoint(port, env, logs / "durable-flask.log", "bench.durable_app:create_app()")
    try:
        target = f"http://127.0.0.1:{port}/webhooks/{ORG}/flow"
        burst(target, headers, 200, 95_000_000)  # warm up
        return burst(target, headers, count, 95_000_000)
    finally:
        process.terminate()
        process.wait(timeout=30)


def in_other_process(function, *args):
    """The load comes from a separate process, so the client does not share our GIL."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


@dataclass
class SkeletonRun:
    """bench/skeleton.py at one rate: the anchor of the CPU per message."""

    rate: float
    http: loadgen.Result
    delivered: int  # messages the skeleton's cases consumer holds with their labels
    cpu: CpuUse


def skeleton_run(settings, env: dict[str, str], logs: Path, rate: float, seconds: float):
    """The skeleton pipeline (bench/skeleton.py) driven at ``rate`` like the product: CPU of
    its processes, PostgreSQL and RabbitMQ while sending and until every message is through.
    Run before the product's stack starts, so that its idle processes cost nothing here."""
    from bench import skeleton

    skeleton.create(settings)
    started = SimpleNamespace(processes={})  # what cpu_meter reads of a stack
    try:
        port = free_port()
        web = "bench.skeleton:create_app()"
        started.processes["skeleton web"] = bare_endpoint(port, env, logs / "skeleton-web.log", web)
        for role, name in skeleton.PROCESSES:
            with (logs / f"skeleton-{role}-{name}.log").open("ab") as output:
                started.processes[f"skeleton {role} {name}"] = subprocess.Popen(
                    [sys.executable, "-m", "bench.skeleton", role, name],
                    cwd=REPO,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
        url = f"http://127.0.0.1:{port}/webhooks/{ORG}/flow"
        plain = {"Content-Type": "application/json", "User-Agent": "Mailroom/9.3.0"}
        with skeleton.connect(settings, autocommit=True) as look:
            SCRIPT_BACKENDS.add(look.info.backend_pid)

            def through(count: int, deadline: float) -> int:
                while (done := skeleton.labelled(look)) < count and time.monotonic() < deadline:
                    for name, process in started.processes.items():
                        if process.poll() is not None:
                            raise RuntimeError(f"{name} exited; see {logs}")
                    time.sleep(0.05)
                return done

            warm = in_other_process(drive, url, plain, 20.0, 2.0, 97_000_000)[0]
            before = through(warm.ok, time.monotonic() + 60)
            cpu = CpuUse()
            with cpu_meter(started, cpu):
                http = in_other_process(drive, url, plain, rate, seconds, 98_000_000)[0]
                delivered = through(before + http.ok, time.monotonic() + 120) - before
        return SkeletonRun(rate, http, delivered, cpu)
    finally:
        for process in started.processes.values():
            process.terminate()
        for process in started.processes.values():
            process.wait(timeout=30)
        skeleton.drop(settings)


# --- the stack, one process at a time ------------------------------------------------------------
STOPPED: set[str] = set()  # the stack's processes this script stopped on purpose


def stop_named(stack, names) -> None:
    """SIGTERM by process id, like Stack.stop, for some of the stack's processes only; they stay
    in ``stack.processes`` so that Stack.restart can start them again."""
    for name in names:
        STOPPED.add(name)
        process = stack.processes[name]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_named(stack, names) -> None:
    for name in names:
        if name in stack.commands():
            stack.restart(name)
        else:
            start_replica(stack, name)
        STOPPED.discard(name)


def start_replica(stack, name: str) -> None:
    """Another process of a worker ("worker-cases-2"): the same command and environment, no
    ops port; in ``stack.processes``, so that Stack.stop stops it with the rest."""
    command = stack.commands()[name.rsplit("-", 1)[0]]
    with (stack.log_dir / f"{name}.log").open("ab") as log:
        stack.processes[name] = subprocess.Popen(
            command, env=stack.environment(), stdout=log, stderr=subprocess.STDOUT
        )


def consumers(stack) -> list[str]:
    """The labeler's and cases' worker processes, replicas included."""
    return [name for name in stack.processes if name.startswith(CONSUMERS)]


def check_alive(stack) -> None:
    """A process that died by itself makes every number after it meaningless: stop the run."""
    if dead := [name for name in stack.dead() if name not in STOPPED]:
        raise RuntimeError(f"processes exited during the run: {', '.join(dead)}; see the logs")


def ready(stack, name: str) -> bool:
    """The process's ops server answers /readyz with 200 (database and broker connection up)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", stack.port_of(name), timeout=1)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


# --- what the partner inbox shows ---------------------------------------------------------------
def in_inbox_since(received_after: datetime):
    """The inbox condition of services.cases.handlers (admin view) on the bench org, for messages
    the ingest service received after a moment (uses ix_messages_folder)."""
    from sqlalchemy import exists

    from services.cases.models import Message, MessageLabel

    return (
        Message.org == ORG,
        Message.archived.is_(False),
        Message.received_at >= received_after,
        Message.simulation.is_(False),
        exists().where(MessageLabel.message_id == Message.id),
    )


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@dataclass
class Watch:
    """First time each expected message was seen labelled in the inbox."""

    expected: list[str]  # external ids, in sending order
    not_before: list[float]  # a lower bound of each one's ingest received_at
    seen: dict[str, float] = field(default_factory=dict)
    oldest: int = 0  # the first expected message not seen yet

    def __post_init__(self) -> None:
        self.wanted = set(self.expected)

    def poll(self, connection, query) -> int:
        """One look at the inbox from the oldest message not seen yet on (``query``: see
        inbox_query)."""
        while self.oldest < len(self.expected) and self.expected[self.oldest] in self.seen:
            self.oldest += 1
        oldest = self.oldest
        if self.complete or self.not_before[oldest] > time.time():
            return 0
        found = connection.execute(query, {"low": at(self.not_before[oldest] - 0.001)}).scalars()
        moment = time.time()  # after the query: never earlier than the commit it saw
        new = [e for e in found if e in self.wanted and e not in self.seen]
        for e in new:
            self.seen[e] = moment
        return len(new)

    @property
    def complete(self) -> bool:
        return len(self.seen) >= len(self.expected)

    def interval(self, shortest: float) -> float:
        """Seconds to the next look: ``shortest``, or LAG_PRECISION of the age of the oldest
        message not seen yet if that is longer."""
        if self.complete:
            return shortest
        return max(shortest, LAG_PRECISION * (time.time() - self.not_before[self.oldest]))


def inbox_query():
    """The external ids of the bench org's inbox messages received from ``:low`` on."""
    from sqlalchemy import bindparam, select

    from services.cases.models import Message

    return select(Message.external_id).where(
        *in_inbox_since(bindparam("low", type_=Message.received_at.type))
    )


def watch_until(stack, watch: Watch, cases, interval: float, accepted, deadline: float) -> None:
    """Poll every ``interval`` (longer while behind: ``Watch.interval``) until every message is
    seen, or as many as were accepted once the sending is over (``accepted()`` is None until
    then), or the deadline (time.monotonic()). One connection in autocommit: each query sees
    what was committed before it, cheaply."""
    query = inbox_query()
    with cases.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while not watch.complete and time.monotonic() < deadline:
            started = time.monotonic()
            check_alive(stack)
            watch.poll(connection, query)
            if (ok := accepted()) is not None and len(watch.seen) >= ok:
                break
            time.sleep(max(0.0, watch.interval(interval) - (time.monotonic() - started)))


# --- CPU use ------------------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd on (the name may hold " ")


def tree_cpu(pid: int, children: dict[int, list[int]]) -> float:
    """CPU seconds of a process and its children (gunicorn's workers), while they live."""
    fields = _stat(pid)
    own = (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0
    return own + sum(tree_cpu(child, children) for child in children.get(pid, ()))


def children_of_all() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _is_load_generator(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


SERVERS = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ"}
# PostgreSQL backends serving this script's own connections (the inbox poller, the counters):
# their CPU is the measurement's, not the product's (about 0.3 ms a message at 100/s, polled
# every 10 ms).
SCRIPT_BACKENDS: set[int] = set()
SCRIPT_POSTGRES = "PostgreSQL for this script"


def watch_backends(engine) -> None:
    """Note the backend of every connection ``engine`` opens from now on (SCRIPT_BACKENDS)."""
    from sqlalchemy import event

    def connected(dbapi_connection, _record) -> None:
        SCRIPT_BACKENDS.add(dbapi_connection.info.backend_pid)

    event.listen(engine, "connect", connected)


def servers_cpu() -> dict[str, float]:
    """CPU seconds of the machine's PostgreSQL and RabbitMQ processes, summed by server (a
    PostgreSQL backend that exits during a phase takes its share with it: connections here are
    pooled, so few do)."""
    found = dict.fromkeys([*SERVERS.values(), SCRIPT_POSTGRES], 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name in SERVERS and (fields := _stat(int(entry.name))):
            server = SCRIPT_POSTGRES if int(entry.name) in SCRIPT_BACKENDS else SERVERS[name]
            found[server] += (int(fields[11]) + int(fields[12])) / TICK
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


NOT_PRODUCT = {"this script (polling)", SCRIPT_POSTGRES, "load generator"}


@dataclass
class CpuUse:
    wall: float = 0.0
    by_process: dict[str, float] = field(default_factory=dict)  # CPU seconds
    machine: float = 0.0

    def product_seconds(self) -> float:
        """CPU seconds of every product process plus PostgreSQL and RabbitMQ: not the load
        generator's nor this script's."""
        return sum(s for name, s in self.by_process.items() if name not in NOT_PRODUCT)

    def per_message_ms(self, messages: int) -> float:
        return 1000 * self.product_seconds() / messages if messages else float("nan")

    def line(self) -> str:
        busiest = sorted(self.by_process.items(), key=lambda item: -item[1])
        parts = ", ".join(
            f"{name} {100 * seconds / self.wall:.0f}%"
            for name, seconds in busiest
            if seconds / self.wall >= 0.02
        )
        return (
            f"{parts} of a core; the whole machine {self.machine / self.wall:.2f} of "
            f"{os.cpu_count()} cores busy"
        )


@contextlib.contextmanager
def cpu_meter(stack, use: CpuUse):
    """CPU seconds of each stack process (by pid, children included) while the block runs."""

    def snapshot() -> dict[str, tuple[int, float]]:
        children = children_of_all()
        found = {
            name: (process.pid, tree_cpu(process.pid, children))
            for name, process in stack.processes.items()
            if process.poll() is None
        }
        found["this script (polling)"] = (os.getpid(), tree_cpu(os.getpid(), {}))
        ours = {process.pid for process in stack.processes.values()}
        generators = [
            pid
            for pid in children.get(os.getpid(), ())
            if pid not in ours and _is_load_generator(pid)
        ]
        if generators:  # one at a time (a Pool of one)
            found["load generator"] = (generators[0], tree_cpu(generators[0], {}))
        for server, seconds in servers_cpu().items():
            found[server] = (0, seconds)
        return found

    before, machine, started = snapshot(), machine_busy(), time.monotonic()
    try:
        yield use
    finally:
        after = snapshot()
        use.wall = time.monotonic() - started
        use.machine = machine_busy() - machine
        for name, (pid, seconds) in after.items():
            earlier = before.get(name)
            use.by_process[name] = seconds - (earlier[1] if earlier and earlier[0] == pid else 0)


# --- the measurements ---------------------------------------------------------------------------
@dataclass
class RateRun:
    rate: float
    seconds: float
    http: loadgen.Result
    latencies_ms: list[float]
    expected: int
    client_lag_p99_ms: float
    cpu: CpuUse


def percentile(values: list[float], p: float) -> float:
    return loadgen.Result(0, 0, 0, 0, values).percentile(p)


def rate_run(
    stack, url, headers, cases, rate, seconds, offset, interval, settle, profile=None
) -> RateRun:
    """Open loop at ``rate`` for ``seconds``; then up to ``settle`` seconds for the inbox."""
    total = int(rate * seconds)
    launch = time.time()  # every webhook is scheduled after launch + i / rate
    watch = Watch(
        [external_id(offset + i) for i in range(total)], [launch + i / rate for i in range(total)]
    )
    cpu = CpuUse()
    with (
        multiprocessing.get_context("spawn").Pool(1) as pool,
        profile or contextlib.nullcontext(),
        cpu_meter(stack, cpu),
    ):
        pending = pool.apply_async(drive, (url, headers, rate, seconds, offset))

        def accepted() -> int | None:
            return pending.get()[0].ok if pending.ready() else None

        watch_until(stack, watch, cases, interval, accepted, time.monotonic() + seconds + settle)
        http, started, sent = pending.get(timeout=60)
    latencies, lags = [], []
    for i in range(total):
        scheduled = started + i / rate
        if (seen := watch.seen.get(external_id(offset + i))) is not None:
            latencies.append((seen - scheduled) * 1000)
        if i in sent:
            lags.append((sent[i] - scheduled) * 1000)
    return RateRun(rate, seconds, http, latencies, total, percentile(lags, 99), cpu)


@dataclass
class Backlog:
    count: int
    posting: loadgen.Result
    relay_emptied_s: float  # from the relay's process start
    relay_rate: float  # rows/s between its first and last published batch
    drained_s: float  # from the workers' process start
    drained_after_ready_s: float  # from both workers' /readyz answering 200
    start_up_s: float  # process start to /readyz
    labeler_s: float  # from ready until the labeler had labelled every message
    cpu: CpuUse  # from ready to drained


def counter(store, *conditions):
    """A function counting the rows that meet the conditions: the statement is built once and
    run on a plain connection, so that polling costs this process little."""
    from sqlalchemy import func, select

    statement = select(func.count()).where(*conditions)

    def count() -> int:
        with store.db.engine.connect() as connection:
            return connection.execute(statement).scalar_one()

    return count


def count_where(store, *conditions) -> int:
    return counter(store, *conditions)()


def wait_for(probe, interval: float, timeout: float, what: str, stack=None) -> float:
    """Poll until ``probe()`` is true; returns the time.time() right after the probe that saw
    it (late by at most one interval and one probe, never early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack is not None:
            check_alive(stack)
        if probe():
            return time.time()
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def relay_rate(ingest, since: float) -> float:
    """Rows per second between the first and the last published batch of the rows written after
    ``since`` (``published_at`` is one stamp per batch, so the first batch's rows are left out)."""
    from sqlalchemy import func, select

    from services.ingest.models import Outbox

    with ingest.db.session() as session:
        first, last, total = session.execute(
            select(
                func.min(Outbox.published_at), func.max(Outbox.published_at), func.count()
            ).where(Outbox.created_at >= at(since))
        ).one()
        first_batch = session.scalar(select(func.count()).where(Outbox.published_at == first))
    seconds = (last - first).total_seconds()
    return (total - first_batch) / seconds if seconds > 0 else float("nan")


def backlog_run(
    stack, url, headers, ingest, cases, labeler, count, offset, interval, profiler=None
) -> Backlog:
    from services.ingest.models import Outbox
    from services.labeler.models import Message as LabelledMessage

    workers = consumers(stack)
    stop_named(stack, [*workers, "relay-ingest"])
    since = time.time()
    posting = burst(url, headers, count, offset)
    if posting.ok != count:
        raise RuntimeError(f"the backlog was not accepted whole: {posting.ok} of {count}")
    unpublished = counter(ingest, Outbox.published_at.is_(None))
    relay_start = time.time()
    start_named(stack, ["relay-ingest"])
    emptied = wait_for(lambda: unpublished() == 0, interval, 600, "the outbox to empty", stack)
    rate = relay_rate(ingest, since)
    workers_start = time.time()
    start_named(stack, workers)
    in_inbox = counter(cases, *in_inbox_since(at(since)))
    workers_ready = wait_for(
        lambda: all(ready(stack, name) for name in CONSUMERS), interval, 120, "ready workers", stack
    )
    cpu = CpuUse()
    with (
        profiler.of(stack, "backlog") if profiler else contextlib.nullcontext(),
        cpu_meter(stack, cpu),
    ):
        labelled = counter(
            labeler, LabelledMessage.org == ORG, LabelledMessage.labeled_at >= at(workers_start)
        )
        labeler_done: list[float] = []
        next_look, next_count = [0.0], [0.0]
        started = time.monotonic()

        def drained_yet() -> bool:
            now = time.monotonic()
            if not labeler_done and now >= next_look[0]:
                next_look[0] = now + LABELER_POLL
                if labelled() >= count:
                    labeler_done.append(time.time())
            if now < next_count[0]:
                return False
            next_count[0] = now + LAG_PRECISION * (now - started)  # see BACKLOG_POLL
            return in_inbox() >= count

        drained = wait_for(drained_yet, interval, 600, "the backlog to drain", stack)
    return Backlog(
        count,
        posting,
        emptied - relay_start,
        rate,
        drained - workers_start,
        drained - workers_ready,
        workers_ready - workers_start,
        (labeler_done[0] if labeler_done else drained) - workers_ready,
        cpu,
    )


def bare_publish_rate(settings, count: int, size: int) -> float:
    """Confirmed publishes to a scratch quorum queue, in batches like the relay's."""
    from kombu import Exchange, Queue

    from shared.bus import topology
    from shared.bus.connection import declare_topology, kombu_connection
    from shared.bus.publisher import ConfirmingPublisher

    exchange = Exchange(topology.exchange_name(settings.namespace), type="topic", durable=True)
    scratch = Queue(
        f"{settings.namespace}.scratch",
        exchange=exchange,
        routing_key=SCRATCH_KEY,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )
    with kombu_connection(settings) as connection:
        declare_topology(connection, settings)
        scratch(connection.default_channel).declare()
    publisher = ConfirmingPublisher(settings)
    body = b"x" * size
    messages = [(str(uuid.uuid4()), SCRATCH_KEY, body) for _ in range(count)]
    try:
        publisher.publish(messages[:100])  # connects and declares the topology
        started = time.perf_counter()
        confirmed = 0
        for at_ in range(0, count, settings.relay_batch):
            confirmed += len(publisher.publish(messages[at_ : at_ + settings.relay_batch]))
        elapsed = time.perf_counter() - started
    finally:
        publisher.close()
        with kombu_connection(settings) as connection:
            connection.default_channel.queue_delete(scratch.name)
    return confirmed / elapsed


# --- profiles -----------------------------------------------------------------------------------
class Profiler:
    """``py-spy record`` of every process of the stack while a phase runs (raw collapsed stacks,
    one file per process) and their top functions by own time. Wall-clock profiles (--idle):
    time a single-threaded worker spends waiting on PostgreSQL is time it does not consume. The
    summary of a worker or relay counts its main thread only (not its ops server's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: list[Path] = []
        self.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(self.py_spy).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def of(self, stack, tag: str):
        spies = []
        for name in stack.processes:
            output = self.directory / f"{tag}-{name}.txt"
            command = [self.py_spy, "record", "--format", "raw", "--rate", "100", "--idle"]
            command += ["--subprocesses", "--pid", str(stack.processes[name].pid)]
            spies.append(
                subprocess.Popen(
                    [*command, "--output", str(output)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            self.files.append(output)
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
            for spy in spies:
                try:
                    spy.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()

    def summary(self, top: int = 8) -> str:
        lines = []
        for path in self.files:
            main_only = path.name.split("-", 1)[1].startswith(("worker-", "relay-"))
            own, total = collapsed_own_time(path, main_only)
            if not total:
                continue
            lines.append(f"{path.name}: {total} samples; own time:")
            for frame, count in own[:top]:
                lines.append(f"  {100 * count / total:5.1f}%  {frame}")
        return "\n".join(lines)


def collapsed_own_time(path: Path, main_only: bool) -> tuple[list[tuple[str, int]], int]:
    """Samples per innermost frame of a collapsed-stacks file ("a;b;c 12" per line); with
    ``main_only``, of the stacks that start at a module's top level (the main thread)."""
    own: dict[str, int] = {}
    total = 0
    if not path.exists():
        return [], 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or (main_only and "<module>" not in stack):
            continue
        frame = stack.rsplit(";", 1)[-1]
        own[frame] = own.get(frame, 0) + int(count)
        total += int(count)
    return sorted(own.items(), key=lambda item: -item[1]), total


# --- set-up and clean-up ------------------------------------------------------------------------
def set_up_org(ingest, cases, labeler, interval: float) -> str:
    """A webhook secret and a label (keyword "bullying", in every bench webhook) made in the
    cases service as an administrator would; returns the secret once the labeler has the label."""
    from sqlalchemy import select

    from services.cases import handlers as cases_handlers
    from services.ingest import handlers as ingest_handlers
    from services.labeler.models import Label

    _, secret = ingest_handlers.add_secret(ingest, ORG)
    _, token = cases_handlers.bootstrap_org(
        cases, org=ORG, name="Bench helpline", admin_email="admin@example.org"
    )
    admin = cases_handlers.authenticate(cases, token)
    rule = [{"type": "keywords", "quantifier": "any", "keywords": ["bullying"]}]
    cases_handlers.create_label(cases, admin, {"name": "Bullying", "rule": rule})

    def labeler_has_it() -> bool:
        with labeler.db.session() as session:
            return session.scalar(select(Label.uuid).where(Label.org == ORG)) is not None

    wait_for(labeler_has_it, interval, 60, "the label to reach the labeler")
    return secret


def environment(settings, env: dict[str, str], cases_workers: int) -> str:
    import sqlalchemy as sa

    from shared.bus.connection import kombu_connection

    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        postgres = conn.execute(sa.text("SHOW server_version")).scalar()
    engine.dispose()
    with kombu_connection(settings) as connection:
        connection.connect()
        rabbit = connection.connection.server_properties.get("version", "?")
    rabbit = rabbit.decode() if isinstance(rabbit, bytes) else rabbit
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("gunicorn", "flask", "sqlalchemy", "psycopg", "pika", "kombu")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, PostgreSQL {postgres}, RabbitMQ {rabbit}; "
        f"{versions}; gunicorn gthread {env['UPARTNERS_WEB_WORKERS']} workers x "
        f"{env.get('UPARTNERS_WEB_THREADS', settings.web_threads)} threads; one process per "
        f"worker and relay ({cases_workers} for cases); prefetch {settings.prefetch}, batch "
        f"wait {1000 * float(env.get('UPARTNERS_BATCH_WAIT', settings.batch_wait)):.0f} ms, "
        f"relay batch {settings.relay_batch}, window {settings.relay_window}, "
        f"idle {settings.relay_idle * 1000:.0f} ms"
    )


# --- the report ---------------------------------------------------------------------------------
def ms(value: float) -> str:
    return "n/a" if value != value else f"{value:,.0f} ms"


def rate_text(result: loadgen.Result, count: int) -> str:
    """A burst's rate, marked when the schedule (``count`` in one second) held it back: then the
    server is at least that fast, and a ratio to it says nothing (session 11's anchors of
    2,000 webhooks gave "1,992/s" for a bare endpoint that took more)."""
    text = f"{result.rate:,.0f}/s"
    if result.rate >= 0.9 * count:
        text += f" (at least: the schedule's {count:,} in one second held it back; raise --bare)"
    return text


def report(
    args, env_line, load, bare_http, durable_http, bare_publish, runs, backlog, anchor
) -> str:
    lines = [
        f"pipeline benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {env_line}",
        f"load average (1 min) before {load[0]:.2f}, after {load[1]:.2f}; inbox polled every "
        f"{args.poll * 1000:.0f} ms, or {LAG_PRECISION:.0%} of the oldest unseen message's age "
        "if longer (latency late by at most that plus one query), the backlog's "
        f"end every {BACKLOG_POLL * 1000:.0f} ms or {LAG_PRECISION:.0%} of its time if longer",
        "",
        "| webhooks/s (open loop) | seconds | accepted/s | errors | labelled in inbox "
        "| p50 | p95 | p99 | webhook HTTP p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        lines.append(
            f"| {run.rate:.0f} | {run.seconds:.0f} | {run.http.rate:,.0f} | {run.http.errors} "
            f"| {len(run.latencies_ms):,} of {run.expected:,} "
            f"| {ms(percentile(run.latencies_ms, 50))} | {ms(percentile(run.latencies_ms, 95))} "
            f"| {ms(percentile(run.latencies_ms, 99))} | {ms(run.http.percentile(99))} |"
        )
    lines += ["", "| throughput | result |", "|---|---|"]
    lines.append(
        f"| bare Flask endpoint, full speed ({bare_http.ok:,} webhooks) "
        f"| {rate_text(bare_http, args.bare)} |"
    )
    lines.append(
        f"| durable Flask endpoint, INSERT + commit, full speed ({durable_http.ok:,} webhooks) "
        f"| {rate_text(durable_http, args.bare)} |"
    )
    if backlog is not None:
        lines.append(
            f"| ingest, full speed ({backlog.count:,} webhooks, consumers stopped) "
            f"| {backlog.posting.rate:,.0f}/s ({backlog.posting.errors} errors); "
            f"{backlog.posting.rate / bare_http.rate:.2f} of the bare endpoint, "
            f"{backlog.posting.rate / durable_http.rate:.2f} of the durable one |"
        )
    lines.append(
        f"| bare confirmed publish ({args.publish:,} x {args.publish_size} B, quorum queue) "
        f"| {bare_publish:,.0f}/s |"
    )
    if backlog is not None:
        lines += [
            f"| ingest relay, outbox of {backlog.count:,} | {backlog.relay_rate:,.0f}/s; emptied "
            f"in {backlog.relay_emptied_s:.1f} s with its start-up |",
            f"| backlog of {backlog.count:,} -> labelled in inbox (labeler + cases workers) "
            f"| {backlog.drained_s:.1f} s with start-up, {backlog.drained_after_ready_s:.1f} s "
            f"from ready ({backlog.count / backlog.drained_after_ready_s:,.0f}/s; start-up "
            f"{backlog.start_up_s:.1f} s; the labeler alone was done after "
            f"{backlog.labeler_s:.1f} s) |",
        ]
    lines.append("")
    for run in runs:
        lines.append(cpu_per_message_line(run))
    if anchor is not None:
        lines.append(skeleton_line(anchor, runs))
    if backlog is not None:
        lines.append(
            f"CPU per message, backlog drain (labeler + cases workers, servers): "
            f"{backlog.cpu.per_message_ms(backlog.count):.2f} ms"
        )
    for run in runs:
        lines.append(f"CPU at {run.rate:.0f}/s (sending and settling): {run.cpu.line()}")
    if backlog is not None:
        lines.append(f"CPU while the backlog drained (from ready): {backlog.cpu.line()}")
    for run in runs:
        if run.client_lag_p99_ms > 10:
            lines.append(
                f"note: at {run.rate:.0f}/s the load generator sent late (p99 "
                f"{run.client_lag_p99_ms:.0f} ms); latencies count from the schedule"
            )
    hundred = next((r for r in runs if r.rate == 100), None)
    if hundred is not None:
        p99 = percentile(hundred.latencies_ms, 99)
        whole = len(hundred.latencies_ms) == hundred.expected
        met = whole and p99 < TARGET_P99_MS
        lines.append(
            f"target p99 webhook -> inbox under {TARGET_P99_MS:.0f} ms at 100/s: "
            f"{'met' if met else 'MISSED'} ({ms(p99)}"
            f"{'' if whole else ', not every message arrived'})"
        )
    if backlog is not None and backlog.count == 10_000:
        met = backlog.drained_s < TARGET_BACKLOG_S
        lines.append(
            f"target backlog of 10,000 drained under {TARGET_BACKLOG_S:.0f} s: "
            f"{'met' if met else 'MISSED'} ({backlog.drained_s:.1f} s with start-up)"
        )
    return "\n".join(lines)


def cpu_per_message_line(run) -> str:
    """The headline: CPU seconds of every product process, PostgreSQL and RabbitMQ over the
    run (sending and settling) per accepted webhook, and each one's share."""
    ok = run.http.ok
    return (
        f"**CPU per message at {run.rate:.0f}/s: {run.cpu.per_message_ms(ok):.2f} ms** "
        f"(every product process, PostgreSQL and RabbitMQ; ms: {by_process_ms(run.cpu, ok)})"
    )


def by_process_ms(cpu: CpuUse, messages: int) -> str:
    """Each process's CPU per message, busiest first, those of 0.05 ms and over."""
    return ", ".join(
        f"{name} {1000 * seconds / messages:.2f}"
        for name, seconds in sorted(cpu.by_process.items(), key=lambda item: -item[1])
        if name not in NOT_PRODUCT and messages and 1000 * seconds / messages >= 0.05
    )


def skeleton_line(anchor: SkeletonRun, runs: list[RateRun]) -> str:
    """The anchor beside the headline: the skeleton's CPU per message at the same rate, each
    of its processes' share, and the product's as a multiple of it."""
    ok = anchor.http.ok
    skeleton_ms = anchor.cpu.per_message_ms(ok)
    line = (
        f"CPU per message of the skeleton at {anchor.rate:.0f}/s (bench/skeleton.py: the same "
        f"path without the product's own work; {anchor.delivered:,} of {ok:,} through): "
        f"{skeleton_ms:.2f} ms (ms: {by_process_ms(anchor.cpu, ok)})"
    )
    same = next((run for run in runs if run.rate == anchor.rate), None)
    if same is not None and skeleton_ms > 0:
        product_ms = same.cpu.per_message_ms(same.http.ok)
        line += f"; the product's {product_ms:.2f} ms is {product_ms / skeleton_ms:.2f} times it"
    return line


def summary(env_line, bare_http, durable_http, runs, backlog, anchor) -> dict:
    """The run's figures for a program (``--json``; bench/compare.py reads them)."""

    def cpu_ms(cpu: CpuUse, messages: int) -> dict[str, float]:
        return {
            name: 1000 * seconds / messages
            for name, seconds in cpu.by_process.items()
            if name not in NOT_PRODUCT and messages
        }

    result: dict = {
        "environment": env_line,
        "bare_per_s": bare_http.rate,
        "durable_per_s": durable_http.rate,
        "rates": [
            {
                "rate": run.rate,
                "in_inbox": len(run.latencies_ms),
                "expected": run.expected,
                "p50_ms": percentile(run.latencies_ms, 50),
                "p99_ms": percentile(run.latencies_ms, 99),
                "cpu_ms_per_message": run.cpu.per_message_ms(run.http.ok),
                "cpu_ms_by_process": cpu_ms(run.cpu, run.http.ok),
            }
            for run in runs
        ],
    }
    if anchor is not None:
        result["skeleton"] = {
            "rate": anchor.rate,
            "through": anchor.delivered,
            "accepted": anchor.http.ok,
            "cpu_ms_per_message": anchor.cpu.per_message_ms(anchor.http.ok),
            "cpu_ms_by_process": cpu_ms(anchor.cpu, anchor.http.ok),
        }
    if backlog is not None:
        result["ingest_per_s"] = backlog.posting.rate
        result["backlog"] = {
            "seconds": backlog.drained_s,
            "seconds_from_ready": backlog.drained_after_ready_s,
            "labeler_seconds": backlog.labeler_s,
            "cpu_ms_per_message": backlog.cpu.per_message_ms(backlog.count),
        }
    return result


# --- main ---------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 300])
    parser.add_argument("--seconds", type=float, default=20, help="per open-loop rate")
    parser.add_argument("--backlog", type=int, default=10_000, help="0: leave it out")
    parser.add_argument("--bare", type=int, default=10_000, help="webhooks to the bare endpoint")
    parser.add_argument("--publish", type=int, default=20_000, help="bare confirmed publishes")
    parser.add_argument("--publish-size", type=int, default=1_000, help="bytes per message")
    parser.add_argument("--poll", type=float, default=0.01, help="inbox poll interval, seconds")
    parser.add_argument(
        "--settle", type=float, default=300, help="seconds to wait for the inbox after sending"
    )
    parser.add_argument(
        "--cases-workers", type=int, default=1, help="cases worker processes (default 1)"
    )
    parser.add_argument(
        "--no-skeleton",
        dest="skeleton",
        action="store_false",
        help="leave out the skeleton pipeline (bench/skeleton.py) at the first rate",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--profile", type=Path, help="py-spy profiles of the first rate and the backlog, here"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.backlog, args.bare, args.publish = 3, 1_000, 1_000, 2_000
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from services import registry
    from services.cases.models import open_store as open_cases
    from services.ingest.models import open_store as open_ingest
    from services.labeler.models import open_store as open_labeler
    from services.stack import Stack, drop_namespace, free_base_port
    from shared.settings import Settings

    def interrupted(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # clean up on kill as on Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with it ignored
    settings = Settings(
        database_url=DATABASE_URL, broker_url=BROKER_URL, namespace=f"bench{uuid.uuid4().hex[:6]}"
    )
    logs = Path(tempfile.mkdtemp(prefix="upartners-pipeline-"))
    stack = Stack(settings, registry.NAMES, registry.WORKERS, log_dir=logs)
    env = stack.environment()
    profiler = Profiler(args.profile) if args.profile else None
    stores = []
    bare = None
    failed = True
    try:
        env_line = environment(settings, env, args.cases_workers)
        load_before = os.getloadavg()[0]
        print(f"namespace {settings.namespace}, logs in {logs}", flush=True)

        bare_port = free_port()
        bare = bare_endpoint(bare_port, env, logs / "bare-flask.log")
        bare_url = f"http://127.0.0.1:{bare_port}/webhooks/{ORG}/flow"
        plain = {"Content-Type": "application/json", "User-Agent": "Mailroom/9.3.0"}
        burst(bare_url, plain, 200, 90_000_000)  # warm up
        bare_http = burst(bare_url, plain, args.bare, 90_000_000)
        bare.terminate()
        bare.wait(timeout=30)
        bare = None
        print(f"bare Flask: {rate_text(bare_http, args.bare)}", flush=True)
        durable_http = durable_rate(settings, env, logs, plain, args.bare)
        print(f"durable Flask (INSERT + commit): {rate_text(durable_http, args.bare)}", flush=True)
        bare_publish = bare_publish_rate(settings, args.publish, args.publish_size)
        print(f"bare confirmed publish: {bare_publish:,.0f}/s", flush=True)
        anchor = None
        if args.skeleton:
            anchor = skeleton_run(settings, env, logs, args.rates[0], args.seconds)
            print(
                f"skeleton at {anchor.rate:.0f}/s: {anchor.cpu.per_message_ms(anchor.http.ok):.2f}"
                f" ms of CPU per message ({anchor.delivered} of {anchor.http.ok} through)",
                flush=True,
            )

        stack.base_port = free_base_port()
        stack.start()
        for k in range(2, args.cases_workers + 1):
            start_replica(stack, f"worker-cases-{k}")
        ingest, cases, labeler = open_ingest(settings), open_cases(settings), open_labeler(settings)
        stores += [ingest, cases, labeler]
        for store in stores:
            watch_backends(store.db.engine)
        secret = set_up_org(ingest, cases, labeler, args.poll)
        headers = {**plain, "Authorization": f"Token {secret}"}
        url = f"{stack.url_of('ingest')}/webhooks/{ORG}/flow"

        warm = rate_run(stack, url, headers, cases, 20, 2, 0, args.poll, 60)
        if len(warm.latencies_ms) < warm.expected:
            raise RuntimeError("the warm-up webhooks did not all reach the inbox; see the logs")
        runs = []
        for k, rate in enumerate(args.rates):
            offset = (k + 1) << 24
            profile = profiler.of(stack, f"{rate:.0f}") if profiler and k == 0 else None
            runs.append(
                rate_run(
                    stack,
                    url,
                    headers,
                    cases,
                    rate,
                    args.seconds,
                    offset,
                    args.poll,
                    args.settle,
                    profile,
                )
            )
            r = runs[-1]
            print(
                f"{rate:.0f}/s: {len(r.latencies_ms)} of {r.expected} in inbox, p99 "
                f"{ms(percentile(r.latencies_ms, 99))}",
                flush=True,
            )
        backlog = None
        if args.backlog:
            # The rate runs' stragglers (past --settle) must not count towards the backlog.
            accepted = warm.http.ok + sum(r.http.ok for r in runs)
            wait_for(
                lambda: count_where(cases, *in_inbox_since(at(0))) >= accepted,
                0.1,
                900,
                "the rate runs' messages to reach the inbox",
                stack,
            )
            backlog = backlog_run(
                stack,
                url,
                headers,
                ingest,
                cases,
                labeler,
                args.backlog,
                60 << 24,
                BACKLOG_POLL,
                profiler,
            )
        check_alive(stack)
        print()
        print(
            report(
                args,
                env_line,
                (load_before, os.getloadavg()[0]),
                bare_http,
                durable_http,
                bare_publish,
                runs,
                backlog,
                anchor,
            )
        )
        if profiler:
            print(f"\nprofiles in {args.profile}\n{profiler.summary()}")
        if args.json:
            figures = summary(env_line, bare_http, durable_http, runs, backlog, anchor)
            args.json.write_text(json.dumps(figures, indent=2))
        failed = False
    except KeyboardInterrupt:
        print("interrupted; stopping every process", file=sys.stderr)
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(timeout=30)
        stack.stop()
        for store in stores:
            store.db.dispose()
        drop_namespace(settings)
        if failed or args.keep_logs:
            print(f"the processes' logs are in {logs}", file=sys.stderr)
        else:
            shutil.rmtree(logs, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

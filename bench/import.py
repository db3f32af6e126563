"""Benchmark of ``upartners import casepro`` with history, on PostgreSQL at both ends.

Builds a CasePro database with tests/casepro (``create_database``, ``load(url, Size(...))``: the
test fixture's org at the size asked for), then imports it, configuration and history, into a
fresh org in a schema of its own (dropped at the end, as is the CasePro database, unless
``--keep``). Reports the time of each phase (contacts, cases, messages, replies, actions, the
statistics and folder counts rebuilt after), rows/s, and the peak memory (ru_maxrss) after each
phase, beside an anchor measured in the same run: the time to merely read every message from the
source (the reader alone, nothing written).

    .venv/bin/python bench/import.py [--messages 1000000] [--cases 100000] [--keep]

Target: the default size in under 10 minutes, memory flat (not growing with the messages).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import machine  # noqa: E402
from services.cases.casepro.source import CaseproDatabase  # noqa: E402
from services.cases.handlers.importing import import_casepro  # noqa: E402
from services.cases.models import MIGRATIONS, open_store  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.casepro.database import create_database, drop_database, load  # noqa: E402
from tests.casepro.fixture import Size  # noqa: E402

DATABASE_URL = os.environ.get(
    "UPARTNERS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ORG = "bench"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def rss_mb() -> float:
    """The memory held now."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def build(name: str, messages: int, cases: int) -> tuple[str, str, dict]:
    """In a process of its own, so that the import's peak memory is the import's alone."""
    url = create_database(DATABASE_URL, name)
    manifest = load(url, Size(messages=messages, cases=cases))
    return url, manifest.subdomain, dict(manifest.counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep both databases")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    name = f"casepro_bench_{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        url, subdomain, counts = pool.apply(build, (name, args.messages, args.cases))
    print(f"CasePro database {name}: {counts} made in {time.perf_counter() - started:.1f} s")
    settings = Settings(database_url=DATABASE_URL, namespace=f"benchimp{uuid.uuid4().hex[:6]}")
    store = open_store(settings)
    try:
        store.db.migrate(MIGRATIONS)
        with CaseproDatabase(url, subdomain) as source:
            started = time.perf_counter()
            read = sum(1 for _ in source.messages())
            anchor = time.perf_counter() - started
        print(
            f"anchor: reading {read:,} messages from the source took {anchor:.1f} s "
            f"({read / anchor:,.0f}/s); peak memory {peak_mb():.0f} MB"
        )

        def progress(line: str) -> None:
            took = time.perf_counter() - began
            print(f"  [{took:7.1f} s, rss {rss_mb():5.0f} MB, peak {peak_mb():5.0f} MB] {line}")

        began = time.perf_counter()
        with CaseproDatabase(url, subdomain) as source:
            report = import_casepro(store, source, ORG, history=True, progress=progress)
        total = time.perf_counter() - began
        print("\n".join(line for line in report.lines() if not line.startswith("  label rules")))
        print(f"{'phase':<16} {'rows':>10} {'seconds':>8} {'rows/s':>9}")
        for phase, took in report.timings.items():
            rows = sum(report.counts[phase].values()) if phase in report.counts else 0
            rate = f"{rows / took:9,.0f}" if rows and took else f"{'':>9}"
            print(f"{phase:<16} {rows:>10,} {took:>8.1f} {rate}")
        print(f"import in all: {total:.1f} s; peak memory {peak_mb():.0f} MB")
        if args.keep:
            print(f"kept: schema {store.db.schema}, CasePro database {name}")
    finally:
        if not args.keep:
            store.db.drop_schema()
        store.db.dispose()
        if not args.keep:
            drop_database(DATABASE_URL, name)


if __name__ == "__main__":
    main()

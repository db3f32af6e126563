"""`upartners web` under the real gunicorn with two worker processes: /metrics sums what every
worker counted (prometheus-client's multiprocess mode), gunicorn's own lines are JSON, there is
no access log, and the metrics folder goes away with gunicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

SECRET_IN_URL = "not-a-real-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_dir_of(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    return Path(values["PROMETHEUS_MULTIPROC_DIR"])


def healthz_count(ops: str) -> float:
    total = 0.0
    for line in requests.get(f"{ops}/metrics", timeout=5).text.splitlines():
        if line.startswith("upartners_http_requests_total{") and 'endpoint="/healthz"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_gunicorn_workers_are_summed_and_log_json(tmp_path):
    port, ops_port = free_port(), free_port()
    log = tmp_path / "web.log"
    env = {
        **os.environ,
        "UPARTNERS_DATA_DIR": str(tmp_path / "data"),
        "UPARTNERS_WEB_WORKERS": "2",
        "UPARTNERS_WEB_THREADS": "2",
        "UPARTNERS_LOG_LEVEL": "DEBUG",
        "UPARTNERS_OPS_PORT": str(ops_port),
    }
    for name in ("UPARTNERS_DATABASE_URL", "UPARTNERS_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "web", "ingest", "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=5).ok:
                    break
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        folder = metrics_dir_of(process.pid)

        def one(_: int) -> int:
            # a new connection each time, so that either worker may accept it
            with requests.Session() as session:
                return session.get(f"{base}/healthz?token={SECRET_IN_URL}", timeout=5).status_code

        sent = 0
        pids: set[str] = set()
        with ThreadPoolExecutor(4) as pool:
            while len(pids) < 2 and sent < 2000:
                assert set(pool.map(one, range(20))) == {200}
                sent += 20
                pids = {f.stem.rsplit("_", 1)[1] for f in folder.glob("counter_*.db")}
        assert len(pids) == 2, "only one worker ever answered"
        # both workers' counts, summed, on the ops port (a second listener of the same gunicorn)
        assert healthz_count(f"http://127.0.0.1:{ops_port}") == sent
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert not folder.exists(), log.read_text()[-3000:]  # removed on exit
    lines = log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is JSON
    assert any(e["logger"] == "gunicorn.error" and "Booting worker" in e["msg"] for e in entries)
    assert {e["process"] for e in entries} == {"web-ingest"}
    assert SECRET_IN_URL not in log.read_text()  # no access log (gunicorn's DEBUG: path only)
    assert not any("token=" in e["msg"] for e in entries)


def test_a_fresh_metrics_folder_sweeps_those_of_dead_masters(tmp_path, monkeypatch):
    from shared import gunicorn_hooks

    monkeypatch.setattr(gunicorn_hooks.tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # its pid is unused once it ended
    dead.wait()
    stale = tmp_path / f"upartners-ingest-metrics-{dead.pid}-abc123"
    alive = tmp_path / f"upartners-cases-metrics-{os.getppid()}-def456"
    other = tmp_path / "upartners-ingest-metrics-x"
    for folder in (stale, alive, other):
        folder.mkdir()
    fresh = Path(gunicorn_hooks.fresh_metrics_dir("ingest"))
    assert fresh.is_dir() and fresh.name.startswith(f"upartners-ingest-metrics-{os.getpid()}-")
    assert not stale.exists() and alive.exists() and other.exists()


def test_each_web_worker_freezes_what_it_loaded(monkeypatch):
    """Both gunicorn configs hand post_worker_init to gunicorn; it moves what the worker loaded
    out of the collector's sight (a full collection walked it all, in the middle of requests)."""
    import gc
    import runpy

    from shared import gunicorn_hooks

    for service in ("cases", "ingest"):
        config = runpy.run_path(
            str(Path(__file__).parents[2] / "deploy" / "gunicorn" / f"{service}.py")
        )
        assert config["post_worker_init"] is gunicorn_hooks.post_worker_init
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    gunicorn_hooks.post_worker_init(None)
    assert frozen == [True]

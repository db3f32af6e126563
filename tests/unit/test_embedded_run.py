"""`upartners run`: the whole embedded pipeline in one process, and data surviving a restart."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.ingest_helpers import fixture


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "UPARTNERS_DATA_DIR": str(data_dir), "UPARTNERS_RELAY_IDLE": "0.01"}
    env.pop("UPARTNERS_DATABASE_URL", None)
    env.pop("UPARTNERS_BROKER_URL", None)
    with log.open("a") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "--port", str(port), "--no-engine"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"upartners run did not start:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=20)


def labelled(data_dir: Path, message_id: str, timeout: float = 10.0) -> bool:
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(data_dir / "labeler.db") as conn:
            if conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone():
                return True
        time.sleep(0.1)
    return False


def test_a_webhook_is_labelled_and_data_survives_a_restart(tmp_path):
    data, log, port = tmp_path / "data", tmp_path / "run.log", free_port()
    process = start(data, port, log)
    try:
        secret = re.search(r"export SECRET=(\S+)", log.read_text()).group(1)
        url = f"http://127.0.0.1:{port}/webhooks/demo/flow"
        headers = {"Authorization": f"Token {secret}"}
        first = requests.post(url, data=fixture("resthook.json"), headers=headers, timeout=5)
        assert first.status_code == 200
        assert labelled(data, first.json()["message"])
        api = requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5)
        assert api.status_code == 200 and "/api/v1/cases" in str(api.json()["paths"])
    finally:
        assert stop(process) == 0  # SIGTERM is a clean stop
    first_output = log.read_text()
    process = start(data, port, log)  # same data folder: the secret and the message are kept
    try:
        again = requests.post(url, data=fixture("resthook.json"), headers=headers, timeout=5)
        assert again.json() == first.json()  # the repeated delivery is recognised after restart
        other = requests.post(url, data=fixture("editor_default.json"), headers=headers, timeout=5)
        assert labelled(data, other.json()["message"])
        assert "export" not in log.read_text().removeprefix(first_output)  # nothing new shown
    finally:
        assert stop(process) == 0

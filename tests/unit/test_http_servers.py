"""What the two real HTTP servers answer before and around the apps: gunicorn under
`upartners web ingest`, and werkzeug's server under `upartners run`. Bodies over the limit are
refused however they are framed, the servers' own error answers are JSON, and /metrics answers
on the ops port only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

LIMIT = 256 * 1024  # ingest's default UPARTNERS_MAX_BODY
VALID = b'{"contact": {"uuid": "c"}, "flow": {"uuid": "f"}, "text": "hi"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    port: int
    ops_port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve(command: list[str], data_dir: Path, log: Path, name: str) -> Iterator[Server]:
    port, ops_port = free_port(), free_port()
    env = {
        **os.environ,
        "UPARTNERS_DATA_DIR": str(data_dir),
        "UPARTNERS_OPS_PORT": str(ops_port),
        "UPARTNERS_WEB_WORKERS": "1",
        "UPARTNERS_WEB_THREADS": "2",
    }
    for variable in ("UPARTNERS_DATABASE_URL", "UPARTNERS_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(variable, None)
    argv = [sys.executable, "-m", "services.cli", *[a.format(port=port) for a in command]]
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, port, ops_port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{server.base}/readyz", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module", params=["gunicorn", "embedded"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp(request.param)
    command = {
        "gunicorn": ["web", "ingest", "--bind", "127.0.0.1:{port}"],
        "embedded": ["run", "--port", "{port}", "--no-engine"],
    }[request.param]
    yield from _serve(command, folder / "data", folder / "server.log", request.param)


def chunks(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked, no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def post_webhook(server: Server, body, headers=None) -> requests.Response:
    return requests.post(
        f"{server.base}/webhooks/demo/flow",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=30,
    )


def test_a_chunked_body_over_the_limit_gets_413(server):
    padded = VALID + b" " * (300 * 1024)  # valid JSON, then padding past the limit
    response = post_webhook(server, chunks(padded))
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 413, (server.name, response.status_code, response.text)
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE"


def test_a_chunked_body_at_the_limit_is_read_whole(server):
    at_limit = VALID + b" " * (LIMIT - len(VALID))
    response = post_webhook(server, chunks(at_limit))
    assert response.status_code == 401  # read whole, then refused for lack of credentials


def test_a_content_length_body_over_the_limit_gets_413(server):
    response = post_webhook(server, VALID + b" " * (300 * 1024))
    assert response.status_code == 413


def test_the_servers_own_refusals_are_json(server):
    response = requests.get(f"{server.base}/healthz", headers={"X-Big": "x" * 70_000}, timeout=10)
    assert response.status_code in (400, 431), response.status_code
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"].isupper()
    assert "<html" not in response.text


def test_metrics_answer_on_the_ops_port_only(server):
    public = requests.get(f"{server.base}/metrics", timeout=10)
    assert public.status_code == 404 and public.json()["error"] == "NOT_FOUND"
    ops = requests.get(f"http://127.0.0.1:{server.ops_port}/metrics", timeout=10)
    assert ops.status_code == 200 and ops.headers["Content-Type"].startswith("text/plain")
    assert "upartners_http_requests_total" in ops.text


def test_headers_an_api_client_relies_on(server):
    wrong_method = requests.get(f"{server.base}/webhooks/demo/flow", timeout=10)
    assert wrong_method.status_code == 405
    assert "POST" in wrong_method.headers["Allow"]
    assert wrong_method.headers["X-Content-Type-Options"] == "nosniff"
    refused = post_webhook(server, VALID)
    assert refused.status_code == 401
    assert refused.headers["Cache-Control"] == "no-store"
    assert refused.headers["X-Content-Type-Options"] == "nosniff"

"""`upartners health`: the container health check, against a tiny local HTTP server."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from services.cli import build_parser
from shared.settings import Settings


class Handler(http.server.BaseHTTPRequestHandler):
    """/healthz answers 200, /readyz 503 (a process that is up but not ready), others 404."""

    def do_GET(self) -> None:
        status = {"/healthz": 200, "/readyz": 503}.get(self.path, 404)
        body = b'{"status": "whatever"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        yield sock.getsockname()[1]


def health(argv: list[str], settings: Settings | None = None) -> int:
    args = build_parser().parse_args(["health", *argv])
    return args.func(args, settings or Settings())


def test_a_200_is_healthy(port, capsys):
    assert health(["--port", str(port)]) == 0
    assert capsys.readouterr().out.strip() == f"http://127.0.0.1:{port}/healthz answered 200"


def test_a_503_is_unhealthy_with_a_one_line_reason(port, capsys):
    assert health(["--port", str(port), "--path", "/readyz"]) == 1
    err = capsys.readouterr().err
    assert err == f"http://127.0.0.1:{port}/readyz answered 503\n"


def test_the_path_may_omit_its_slash(port):
    assert health(["--port", str(port), "--path", "healthz"]) == 0
    assert health(["--port", str(port), "--path", "nope"]) == 1


def test_a_closed_port_is_unhealthy(closed_port, capsys):
    assert health(["--port", str(closed_port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"http://127.0.0.1:{closed_port}/healthz unreachable: ")
    assert err.count("\n") == 1


def test_a_silent_process_times_out(capsys):
    with silent_listener() as silent:
        assert health(["--port", str(silent), "--timeout", "0.2"]) == 1
    assert "unreachable" in capsys.readouterr().err


def test_the_port_defaults_to_the_ops_port(port, closed_port):
    assert health([], Settings(ops_port=port)) == 0
    assert health([], Settings(ops_port=closed_port)) == 1
    # --port wins over the settings
    assert health(["--port", str(port)], Settings(ops_port=closed_port)) == 0


def test_without_a_port_it_says_so(capsys):
    assert health([], Settings(ops_port=None)) == 1
    assert "UPARTNERS_OPS_PORT" in capsys.readouterr().err

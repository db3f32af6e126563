"""Serve a WSGI app (usually the RapidPro API v2 contract fake) on loopback for a test.

    with serve_app(create_app(page_size=3)) as base_url:
        ...

The server listens on 127.0.0.1 on a free port, in a background thread, and is shut down when the
block exits. :class:`FakeControl` wraps the fake's ``/_fake/`` control endpoints.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from werkzeug.serving import make_server


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:<port>``) of ``app`` served in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-server"
    )
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeControl:
    """Calls to the contract fake's control endpoints; each raises on an HTTP error."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.base_url}/_fake{path}", json=body, timeout=30)
        if response.status_code >= 400:
            raise AssertionError(f"{method} /_fake{path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def create_workspace(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/workspaces", spec)

    def state(self, workspace: str) -> dict[str, Any]:
        return self.call("GET", f"/workspaces/{workspace}/state")

    def settings(self, workspace: str, **settings: Any) -> dict[str, Any]:
        return self.call("POST", f"/workspaces/{workspace}/settings", settings)

    def inject_fault(self, workspace: str, **fault: Any) -> dict[str, Any]:
        return self.call("POST", f"/workspaces/{workspace}/faults", fault)

    def clear_faults(self, workspace: str) -> None:
        self.call("DELETE", f"/workspaces/{workspace}/faults")

    def add(self, workspace: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a contact, group, flow, label or message (``kind`` is the plural)."""
        return self.call("POST", f"/workspaces/{workspace}/{kind}", spec)

    def send(self, workspace: str, contact: str, **body: Any) -> dict[str, Any]:
        """Emit a webhook from ``contact`` (see the fake's ``send`` control endpoint)."""
        return self.call("POST", f"/workspaces/{workspace}/contacts/{contact}/send", body)

    def requests(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{key}={value}" for key, value in filters.items())
        return self.call("GET", f"/requests?{query}" if query else "/requests")

    def reset(self, seed: str | None = None) -> None:
        self.call("POST", "/reset", {"seed": seed} if seed else {})

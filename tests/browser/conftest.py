"""A real browser for the pages: Playwright (sync API, our own fixtures) driving Debian's
Chromium, against the cases app served by werkzeug in a thread on a free loopback port.

Where Chromium is missing a test skips locally and fails in CI (``CI=true``): ``.ci/run``
installs it (``apt-get install -y chromium``). Screenshots go to a temporary folder, or to
``UPARTNERS_SCREENSHOTS`` when set (``docs/screenshots`` refreshes the README's pictures)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.cases_helpers import CasesWorld

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def site(settings) -> Iterator[tuple[CasesWorld, str]]:
    """The cases app with one org, served on a free loopback port; (world, base URL)."""
    world = CasesWorld(settings)
    server = make_server("127.0.0.1", 0, world.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield world, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        world.close()


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = os.environ.get("UPARTNERS_SCREENSHOTS")
    target = Path(folder) if folder else tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target

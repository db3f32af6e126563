"""Waiting for something that happens in another process or thread, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(
    probe: Callable[[], Any], timeout: float = 30.0, what: str = "", interval: float = 0.05
) -> Any:
    """The first truthy result of ``probe``; an AssertionError once ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if result := probe():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)

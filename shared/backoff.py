"""The one backoff computation: how long to wait before the next try, doubling up to a cap.

The dispatcher, both transports and the relay wait with it between retries, and flowbridge's
flow engine adapter between calls to the engine.
"""

from __future__ import annotations


def backoff(attempt: int, *, base: float = 0.1, cap: float = 5.0) -> float:
    """``base`` seconds doubled ``attempt`` times (attempt 0 waits ``base``), at most ``cap``."""
    return min(cap, base * 2**attempt)

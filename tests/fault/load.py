"""An open-loop webhook sender that records every answer.

Requests leave on a fixed schedule whatever the server does (a stalled server cannot slow the
sender down and so hide its failures), each on its own connection (a keep-alive connection the
server closed while idle would show as a failure that is the client's, not the server's).
Every answer is kept: its status, the message id of a 2xx, or the error of a request that got
no HTTP answer at all.
"""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass(frozen=True)
class Answer:
    index: int
    scheduled: float  # time.monotonic() the request was due
    answered: float  # time.monotonic() its answer (or error) came
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    message_id: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class OpenLoop:
    """Posts ``count`` bodies at ``rate`` per second from background threads."""

    def __init__(
        self,
        url: str,
        body_for: Callable[[int], bytes],
        headers: dict[str, str],
        *,
        rate: float,
        count: int,
        concurrency: int = 32,
        timeout: float = 20.0,
    ) -> None:
        parsed = urlparse(url)
        self.host, self.port, self.path = parsed.hostname, parsed.port, parsed.path
        self.body_for, self.headers = body_for, {**headers, "Connection": "close"}
        self.rate, self.count, self.timeout = rate, count, timeout
        self.answers: list[Answer] = []
        self.started_at = 0.0
        self._lock = threading.Lock()
        self._tickets: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, daemon=True) for _ in range(concurrency)
        ]
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)

    def start(self) -> OpenLoop:
        self.started_at = time.monotonic()
        for thread in self._threads:
            thread.start()
        self._scheduler.start()
        return self

    def at(self, seconds: float) -> float:
        """The monotonic time ``seconds`` after the first request."""
        return self.started_at + seconds

    def join(self, timeout: float) -> list[Answer]:
        deadline = time.monotonic() + timeout
        for thread in [self._scheduler, *self._threads]:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise AssertionError(f"the sender did not finish within {timeout:.0f}s")
        return sorted(self.answers, key=lambda a: a.index)

    def _schedule(self) -> None:
        for i in range(self.count):
            due = self.started_at + i / self.rate
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            self._tickets.put((i, due))
        for _ in self._threads:
            self._tickets.put(None)

    def _work(self) -> None:
        while (ticket := self._tickets.get()) is not None:
            answer = self._send(*ticket)
            with self._lock:
                self.answers.append(answer)

    def _send(self, index: int, due: float) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request("POST", self.path, body=self.body_for(index), headers=self.headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Answer(index, due, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
        message_id, error = None, None
        if 200 <= response.status < 300:
            try:
                message_id = json.loads(payload)["message"]
            except (ValueError, KeyError, TypeError):
                error = "a 2xx without a message id"
        return Answer(index, due, time.monotonic(), response.status, message_id, error)


def status_counts(answers: list[Answer]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for answer in answers:
        key = str(answer.status) if answer.status is not None else "no answer"
        counts[key] = counts.get(key, 0) + 1
    return counts

"""A small HTTP load generator for the benchmarks: open loop at a fixed rate, or closed loop
at full speed, over keep-alive connections. Latency is measured from each request's scheduled
time, so a slow server cannot hide its queueing (no coordinated omission)."""

from __future__ import annotations

import http.client
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass
class Result:
    sent: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    def line(self, label: str) -> str:
        return (
            f"{label:<34} {self.rate:8.0f}/s  ok {self.ok:6d}  errors {self.errors:4d}  "
            f"p50 {self.percentile(50):6.1f} ms  p95 {self.percentile(95):6.1f} ms  "
            f"p99 {self.percentile(99):6.1f} ms"
        )


def _connection(url: str) -> http.client.HTTPConnection:
    parsed = urlparse(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=15)


def run(
    url: str,
    body_for: Callable[[int], bytes],
    headers: dict[str, str],
    *,
    rate: float | None,
    seconds: float,
    concurrency: int = 32,
) -> Result:
    """``rate=None``: closed loop, each of ``concurrency`` connections as fast as it can."""
    path = urlparse(url).path + (("?" + urlparse(url).query) if urlparse(url).query else "")
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "sent": 0}
    start = time.perf_counter()
    stop_at = start + seconds
    tickets: queue.Queue[tuple[int, float] | None] = queue.Queue()

    def send(conn, i: int, scheduled: float):
        try:
            conn.request("POST", path, body=body_for(i), headers=headers)
            response = conn.getresponse()
            response.read()
            good = 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            conn.close()
            good = False
        elapsed = (time.perf_counter() - scheduled) * 1000
        with lock:
            counts["sent"] += 1
            counts["ok" if good else "errors"] += 1
            if good:
                latencies.append(elapsed)

    def open_loop_worker():
        conn = _connection(url)
        while (ticket := tickets.get()) is not None:
            send(conn, *ticket)
        conn.close()

    def closed_loop_worker(offset: int):
        conn, i = _connection(url), offset
        while time.perf_counter() < stop_at:
            send(conn, i, time.perf_counter())
            i += concurrency
        conn.close()

    if rate is None:
        threads = [
            threading.Thread(target=closed_loop_worker, args=(n,)) for n in range(concurrency)
        ]
        for t in threads:
            t.start()
    else:
        threads = [threading.Thread(target=open_loop_worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        total = int(rate * seconds)
        for i in range(total):
            scheduled = start + i / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                time.sleep(delay)
            tickets.put((i, scheduled))
        for _ in threads:
            tickets.put(None)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return Result(counts["sent"], counts["ok"], counts["errors"], elapsed, latencies)


def summary(values: list[float]) -> str:
    return f"mean {statistics.fmean(values):.1f}" if values else "n/a"

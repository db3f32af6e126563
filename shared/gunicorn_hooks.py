"""What the gunicorn configs (deploy/gunicorn/*.py) plug into gunicorn: a logger without an
access log, and the hooks of prometheus-client's multiprocess mode.

Kept out of the config files so that both web processes share them, and out of shared/logs.py
and shared/metrics.py so that only gunicorn processes import gunicorn.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn import glogging

# Imported here, when gunicorn reads its config: child_exit runs in the master's SIGCHLD handler,
# which may interrupt itself, and an import begun there can re-enter (a half-imported module).
from prometheus_client import multiprocess


class Logger(glogging.Logger):
    """gunicorn's logger with the access log gone for good.

    With a ``logconfig_dict`` gunicorn builds an access line for every request (then our
    config drops it): skip that work, and never risk writing URLs, which may carry ?token=.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)  # applies logconfig_dict (shared.logs.gunicorn_logconfig)
        logging.captureWarnings(True)  # warnings as JSON lines too, not raw stderr

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


def post_worker_init(_worker: Any) -> None:
    """The worker has loaded the app: move every object made so far (modules, the app, its
    routes, schemas and caches) out of the garbage collector's sight. A full collection walks
    them all, and came in the middle of requests: agent activity over 500 users had a p99 of
    100 ms against a p50 of 45 (bench/stats.py); frozen, 59."""
    gc.freeze()


def child_exit(_server: Any, worker: Any) -> None:
    """A worker process ended: drop its live gauges (its counters stay in the sums)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    """gunicorn stops: remove the metrics folder ``upartners web`` created for this run."""
    owned = os.environ.get("UPARTNERS_OWN_METRICS_DIR")
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)


def fresh_metrics_dir(service: str) -> str:
    """A new folder for prometheus-client's multiprocess files, named after this process (which
    becomes gunicorn's master: ``upartners web`` execs it). Folders of masters that died without
    their ``on_exit`` (SIGKILL) are removed first."""
    root = Path(tempfile.gettempdir())
    for stale in root.glob("upartners-*-metrics-*-*"):
        pid = stale.name.split("-")[3]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"upartners-{service}-metrics-{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True

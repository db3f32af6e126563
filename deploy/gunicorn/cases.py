"""gunicorn settings of the cases web process (``upartners web cases`` uses this file).

Threads rather than processes alone: a request spends much of its time waiting on PostgreSQL
and threads share one connection pool per process.
"""

from shared.gunicorn_hooks import (  # noqa: F401 (gunicorn reads them)
    child_exit,
    on_exit,
    post_worker_init,
)
from shared.gunicorn_worker import when_ready  # noqa: F401 (SIGTERM: stop listening first)
from shared.logs import gunicorn_logconfig
from shared.settings import Settings

# The address comes from `upartners web --bind`. Workers and threads: UPARTNERS_WEB_WORKERS,
# UPARTNERS_WEB_THREADS (shared/settings.py).
_settings = Settings.from_env()
workers = _settings.web_workers
worker_class = "shared.gunicorn_worker.DrainingThreadWorker"  # gthread, drained on SIGTERM
threads = _settings.web_threads
# No partner request should take longer; a stuck worker is replaced.
timeout = 30
graceful_timeout = 20  # SIGTERM: finish the requests in flight, then stop
keepalive = 5
max_requests = 10000
max_requests_jitter = 1000
accesslog = None  # URLs carry search text written by partners: kept out of logs
errorlog = "-"
# gunicorn's own log lines through the same JSON handler as the app's (shared/logs.py); its
# logger class also drops access lines, which a logconfig_dict would otherwise turn on.
proc_name = "web-cases"
logconfig_dict = gunicorn_logconfig(_settings, "web-cases")
logger_class = "shared.gunicorn_hooks.Logger"
# child_exit and on_exit: prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set
# by `upartners web`) sums every worker's metrics on /metrics.

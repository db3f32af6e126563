"""gunicorn settings of the ingest web process (``upartners web ingest`` uses this file).

Threads rather than processes alone: a webhook spends most of its time waiting on PostgreSQL's
commit, and threads share one connection pool per process.
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
# The flow engine gives up after 15 s; a request that takes longer is lost to it anyway.
timeout = 15
graceful_timeout = 20  # SIGTERM: finish the requests in flight, then stop
keepalive = 5
# A worker is replaced after this many requests (a leak's bound). Its keep-alive connections
# close then, and a request sent on one at that moment fails: at 10,000, a poll's 300
# webhooks/s replaced each worker every minute (bench/pipeline.py saw 13 failures in 10,000).
max_requests = 200_000
max_requests_jitter = 20_000
accesslog = None  # webhook URLs may carry ?token=: never write them to an access log
errorlog = "-"
# gunicorn's own log lines through the same JSON handler as the app's (shared/logs.py); its
# logger class also drops access lines, which a logconfig_dict would otherwise turn on.
proc_name = "web-ingest"
logconfig_dict = gunicorn_logconfig(_settings, "web-ingest")
logger_class = "shared.gunicorn_hooks.Logger"
# child_exit and on_exit: prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set
# by `upartners web`) sums every worker's metrics on /metrics.

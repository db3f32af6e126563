"""gunicorn settings of the cases web process (``upartners web cases`` uses this file).

Threads rather than processes alone: a request spends much of its time waiting on PostgreSQL
and threads share one connection pool per process.
"""

import multiprocessing
import os

bind = os.environ.get("UPARTNERS_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("UPARTNERS_WEB_WORKERS", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("UPARTNERS_WEB_THREADS", "8"))
# No partner request should take longer; a stuck worker is replaced.
timeout = 30
graceful_timeout = 20  # SIGTERM: finish the requests in flight, then stop
keepalive = 5
max_requests = 10000
max_requests_jitter = 1000
accesslog = None  # URLs carry search text written by partners: kept out of logs
errorlog = "-"

"""gunicorn settings of the ingest web process (``upartners web ingest`` uses this file).

Threads rather than processes alone: a webhook spends most of its time waiting on PostgreSQL's
commit, and threads share one connection pool per process.
"""

import multiprocessing
import os

bind = os.environ.get("UPARTNERS_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("UPARTNERS_WEB_WORKERS", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("UPARTNERS_WEB_THREADS", "8"))
# The flow engine gives up after 15 s; a request that takes longer is lost to it anyway.
timeout = 15
graceful_timeout = 20  # SIGTERM: finish the requests in flight, then stop
keepalive = 5
max_requests = 10000
max_requests_jitter = 1000
accesslog = None  # webhook URLs may carry ?token=: never write them to an access log
errorlog = "-"

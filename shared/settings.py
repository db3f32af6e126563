"""Settings: read from the environment once, into one frozen object that is passed down.

Nothing here connects to anything. With no variables set, the product runs on its embedded
default: SQLite files and the embedded bus under ``UPARTNERS_DATA_DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# Every variable the settings read, with what it means (the README's table lists the same).
ENVIRONMENT = {
    "UPARTNERS_DATABASE_URL": "PostgreSQL URL (postgresql+psycopg://...); unset: SQLite files",
    "UPARTNERS_BROKER_URL": "RabbitMQ URL (amqp://user:pass@host:5672/vhost); unset: embedded bus",
    "UPARTNERS_DATA_DIR": "where the embedded default keeps its SQLite files (default ./var)",
    "UPARTNERS_NAMESPACE": "prefix of exchanges, queues and database schemas (default upartners)",
    "UPARTNERS_PREFETCH": "unacknowledged messages a consumer holds at once (default 50)",
    "UPARTNERS_DELIVERY_LIMIT": "deliveries of one message before it is dead-lettered (default 10)",
    "UPARTNERS_BATCH_WAIT": "seconds a consumer waits for more messages before handling what "
    "it holds together (default 0.02; 0: at once)",
    "UPARTNERS_RELAY_BATCH": "outbox rows a relay publishes per transaction (default 500)",
    "UPARTNERS_RELAY_WINDOW": "publishes in flight awaiting broker confirms (default 200)",
    "UPARTNERS_RELAY_IDLE": "seconds a relay sleeps when its outbox is empty (default 0.05; "
    "five times that after 2 s without a row)",
    "UPARTNERS_MAX_BODY": "largest webhook body accepted, in bytes (default 262144)",
    "UPARTNERS_SIGNATURE_WINDOW": "seconds a signed webhook's timestamp stays valid (default 300)",
    "UPARTNERS_SECRET_CACHE_TTL": "seconds a revoked webhook secret may still work (default 5)",
    "UPARTNERS_LOG_LEVEL": "logging level (default INFO)",
    "UPARTNERS_LOG_FORMAT": "json (one JSON object per line, the default) or text",
    "UPARTNERS_OPS_PORT": "port of a process's /healthz, /readyz, /metrics (unset: no such port)",
    "UPARTNERS_WEB_WORKERS": "gunicorn worker processes per web process (default: CPU count)",
    "UPARTNERS_WEB_THREADS": "threads per gunicorn worker (default 8)",
    "UPARTNERS_SESSION_SECRET": "key signing web session cookies (unset: one kept in the data dir)",
    "UPARTNERS_SECURE_COOKIES": "true when served over TLS: cookies sent over HTTPS only",
    "UPARTNERS_PROXIES": "reverse proxies in front that set X-Forwarded-For (default 0)",
    "UPARTNERS_EXPORT_DIR": "folder of export files, shared by cases web and worker "
    "(default <data_dir>/exports)",
    "UPARTNERS_EXPORT_RETENTION_DAYS": "days an export file is kept, then deleted (default 7)",
}


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    broker_url: str | None = None
    data_dir: Path = Path("var")
    namespace: str = "upartners"
    prefetch: int = 50
    batch_wait: float = 0.02
    delivery_limit: int = 10
    relay_batch: int = 500
    relay_window: int = 200
    relay_idle: float = 0.05
    max_body: int = 256 * 1024
    signature_window: int = 300
    secret_cache_ttl: float = 5.0
    log_level: str = "INFO"
    log_format: str = "json"
    ops_port: int | None = None
    web_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    web_threads: int = 8
    session_secret: str | None = None
    secure_cookies: bool = False
    proxies: int = 0
    export_dir: Path | None = None  # None: <data_dir>/exports (see ``exports_path``)
    export_retention_days: int = 7

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        defaults = cls()
        return cls(
            database_url=get("UPARTNERS_DATABASE_URL"),
            broker_url=get("UPARTNERS_BROKER_URL"),
            data_dir=Path(get("UPARTNERS_DATA_DIR") or defaults.data_dir),
            namespace=get("UPARTNERS_NAMESPACE") or defaults.namespace,
            prefetch=int(get("UPARTNERS_PREFETCH") or defaults.prefetch),
            batch_wait=float(get("UPARTNERS_BATCH_WAIT") or defaults.batch_wait),
            delivery_limit=int(get("UPARTNERS_DELIVERY_LIMIT") or defaults.delivery_limit),
            relay_batch=int(get("UPARTNERS_RELAY_BATCH") or defaults.relay_batch),
            relay_window=int(get("UPARTNERS_RELAY_WINDOW") or defaults.relay_window),
            relay_idle=float(get("UPARTNERS_RELAY_IDLE") or defaults.relay_idle),
            max_body=int(get("UPARTNERS_MAX_BODY") or defaults.max_body),
            signature_window=int(get("UPARTNERS_SIGNATURE_WINDOW") or defaults.signature_window),
            secret_cache_ttl=float(get("UPARTNERS_SECRET_CACHE_TTL") or defaults.secret_cache_ttl),
            log_level=get("UPARTNERS_LOG_LEVEL") or defaults.log_level,
            log_format=get("UPARTNERS_LOG_FORMAT") or defaults.log_format,
            ops_port=int(port) if (port := get("UPARTNERS_OPS_PORT")) else None,
            web_workers=int(get("UPARTNERS_WEB_WORKERS") or defaults.web_workers),
            web_threads=int(get("UPARTNERS_WEB_THREADS") or defaults.web_threads),
            session_secret=get("UPARTNERS_SESSION_SECRET"),
            secure_cookies=(get("UPARTNERS_SECURE_COOKIES") or "false").lower() in ("1", "true"),
            proxies=int(get("UPARTNERS_PROXIES") or defaults.proxies),
            export_dir=Path(folder) if (folder := get("UPARTNERS_EXPORT_DIR")) else None,
            export_retention_days=int(
                get("UPARTNERS_EXPORT_RETENTION_DAYS") or defaults.export_retention_days
            ),
        )

    def __post_init__(self) -> None:
        if self.log_format not in ("json", "text"):
            raise ValueError(f"UPARTNERS_LOG_FORMAT must be json or text, not {self.log_format!r}")
        if self.export_retention_days < 1:
            raise ValueError("UPARTNERS_EXPORT_RETENTION_DAYS must be at least 1")

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)

    @property
    def exports_path(self) -> Path:
        """Where export files are written (by the cases worker) and read (by the cases web)."""
        return self.export_dir or self.data_dir / "exports"

    @property
    def embedded_bus(self) -> bool:
        return self.broker_url is None

    def __repr__(self) -> str:
        # URLs may carry passwords, and the session secret is one: never print them whole.
        return (
            f"Settings(database={_redact(self.database_url)}, broker={_redact(self.broker_url)}, "
            f"namespace={self.namespace!r}, data_dir={str(self.data_dir)!r})"
        )


def _redact(url: str | None) -> str:
    if url is None:
        return "embedded"
    scheme, _, rest = url.partition("://")
    host = rest.rsplit("@", 1)[-1]
    return f"{scheme}://***@{host}" if "@" in rest else url

"""Logging of every process: one line per record on stderr, JSON by default, with the correlation
id of the event or request in hand, and a redaction filter as a safety net.

The rule is that no log call passes a URN, a phone number, a message body or a secret. The
filter on the handler scrubs what slips through anyway (URN-like strings, phone-like digit runs,
``token=`` values, ``Authorization``/``Token``/``Bearer`` credentials, passwords in URLs), in the
message and in tracebacks, before any formatter sees the record.

The correlation id lives in a ``contextvars.ContextVar`` set by ``log_context``: around each
event in ``shared.bus.dispatch``, and around each HTTP request (``shared.http.instrument``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

# --- context ------------------------------------------------------------------------------------
CONTEXT_FIELDS = ("correlation_id", "event_id", "event")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "upartners_log_context", default=None
)


def current_context() -> dict[str, str]:
    return dict(_context.get() or {})


def push_context(**values: str | None) -> contextvars.Token:
    """Add values to the current context; undo with ``pop_context(token)`` in the same thread."""
    merged = current_context()
    merged.update({key: str(value) for key, value in values.items() if value is not None})
    return _context.set(merged)


def pop_context(token: contextvars.Token) -> None:
    _context.reset(token)


@contextmanager
def log_context(
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
    event: str | None = None,
) -> Iterator[None]:
    """Log records inside the block carry these ids (nested blocks add to the outer ones)."""
    token = push_context(correlation_id=correlation_id, event_id=event_id, event=event)
    try:
        yield
    finally:
        pop_context(token)


# --- redaction ----------------------------------------------------------------------------------
# The URN schemes of RapidPro-style engines: redacted from logs, and what the privacy tests look
# for in every partner-facing answer (one list for both).
URN_SCHEMES = (
    "tel",
    "whatsapp",
    "telegram",
    "facebook",
    "twitter",
    "twitterid",
    "viber",
    "line",
    "mailto",
    "ext",
    "external",
    "jiochat",
    "wechat",
    "fcm",
    "freshchat",
    "vk",
    "discord",
    "rocketchat",
    "webchat",
    "instagram",
    "slack",
    "teams",
)
REDACTED = "[redacted]"

_URN = re.compile(
    r"(?<![\w.-])(?:" + "|".join(sorted(URN_SCHEMES, key=len, reverse=True)) + r"):"
    r"(?!//)[^\s\"'<>,;()\[\]{}]+",
    re.IGNORECASE,
)
# Kept as they are (they would otherwise look like phone numbers): UUIDs, ISO dates and times,
# IPv4 addresses, with their port or not (gunicorn's "Listening at: http://127.0.0.1:8000").
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_KEEP = (
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    rf"|(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?::\d{{1,5}})?(?![\w.])"
    r"|\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
# Digit runs with spaces, brackets or dashes; and groups of digits between two dots or more
# with eight digits in all ("+55.11.98765.4321", "078.812.3456"; "0.25" and "3.11.7" stay).
_PHONE = r"(?<![\w.+-])\+?\d[\d ()-]{6,}\d(?!\d)"
_DOTTED = r"(?<![\w.+-])\+?\d{1,5}(?:\.\d{1,5}){2,5}(?![\w.])"
_DIGITS = re.compile(f"(?P<keep>{_KEEP})|(?P<phone>{_PHONE})|(?P<dotted>{_DOTTED})")
_QUERY_TOKEN = re.compile(r"(?i)\b((?:access_|api_)?token=)[^&\s\"'<>]+")
_HEADER_CREDENTIAL = re.compile(
    r"(?i)\b(authorization|x-upartners-token|x-upartners-signature)([\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:token|bearer|basic)\s+)?[^\s\"',;}]+"
)
_SCHEME_CREDENTIAL = re.compile(r"\b(Token|Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")


def redact(text: str) -> str:
    """Scrub URNs, phone numbers and credentials out of a log text; keep UUIDs and timestamps."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _HEADER_CREDENTIAL.sub(rf"\1\2{REDACTED}", text)
    text = _SCHEME_CREDENTIAL.sub(rf"\1 {REDACTED}", text)
    text = _QUERY_TOKEN.sub(rf"\1{REDACTED}", text)
    text = _URN.sub("[urn]", text)
    return _DIGITS.sub(_phone_or_kept, text)


def _phone_or_kept(match: re.Match[str]) -> str:
    if match.group("keep"):
        return match.group("keep")
    dotted = match.group("dotted")
    if dotted and sum(c.isdigit() for c in dotted) < 8:
        return dotted  # a version number, not a phone number
    return "[phone]"


class RedactingFilter(logging.Filter):
    """On the handler: attach the context ids and scrub the message and traceback in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        for key in CONTEXT_FIELDS:
            if getattr(record, key, None) is None and key in context:
                setattr(record, key, context[key])
            value = getattr(record, key, None)
            if value is not None:
                setattr(record, key, redact(str(value)))
        if not getattr(record, "_upartners_redacted", False):
            record.msg, record.args = redact(_message(record)), None
            if record.exc_info and not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
            record._upartners_redacted = True
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 (a bad format string must not lose the record)
        return f"{record.msg!s} {record.args!r}"


# --- formatters ---------------------------------------------------------------------------------
def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, process, pid, msg, and the context ids."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For people at a terminal: ``ts LEVEL process[pid] logger: msg (cid=...)``."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {self.process}[{record.process}] "
            f"{record.name}: {record.getMessage()}"
        )
        ids = [
            f"{key}={value}"
            for key in CONTEXT_FIELDS
            if (value := getattr(record, key, None)) is not None
        ]
        if ids:
            line += f" ({' '.join(ids)})"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def make_handler(process: str, log_format: str = "json") -> logging.Handler:
    """The one handler of a process: redaction filter, then the JSON or text formatter.

    Also the ``()`` factory of the gunicorn ``logconfig_dict`` (deploy/gunicorn/*.py).
    """
    handler = StderrHandler()
    handler.addFilter(RedactingFilter())
    formatter = JsonFormatter(process) if log_format == "json" else TextFormatter(process)
    handler.setFormatter(formatter)
    handler._upartners = True  # type: ignore[attr-defined]
    return handler


# Floors for libraries: protocol chatter (pika logs every connection step at INFO), migration
# steps, and access logs (werkzeug's, gunicorn's), whose URLs may carry ?token=.
QUIET_LOGGERS = {
    "amqp": logging.INFO,
    "kombu": logging.INFO,
    "pika": logging.WARNING,
    "urllib3": logging.INFO,
    "alembic": logging.WARNING,
    "werkzeug": logging.WARNING,
    "gunicorn.access": logging.CRITICAL + 1,
}


def configure_logging(settings: Any, process: str, *, force: bool = False) -> None:
    """Install the process's one stderr handler on the root logger (idempotent).

    Like ``logging.basicConfig``, leaves a root logger that already has someone else's handlers
    (a test runner calling ``main()``) alone unless ``force``.
    """
    root = logging.getLogger()
    if not force and any(not getattr(h, "_upartners", False) for h in root.handlers):
        return
    for old in [h for h in root.handlers if getattr(h, "_upartners", False)]:
        root.removeHandler(old)
    root.addHandler(make_handler(process, settings.log_format))
    level = _level(settings.log_level)
    root.setLevel(level)
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, level))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def gunicorn_logconfig(settings: Any, process: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error log through the same handler as ours, and its
    access log off (with a logconfig_dict gunicorn would write access lines, with ?token=)."""
    level = _level(settings.log_level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level, "handlers": ["upartners"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            **{
                name: {"level": max(floor, level)}
                for name, floor in QUIET_LOGGERS.items()
                if name != "gunicorn.access"
            },
        },
        "handlers": {
            "upartners": {
                "()": "shared.logs.make_handler",
                "process": process,
                "log_format": settings.log_format,
            }
        },
        "formatters": {},
    }


def _level(name: object) -> int:
    level = logging.getLevelName(str(name).upper())
    return level if isinstance(level, int) else logging.INFO


def _log_uncaught(exc_type, exc, tb) -> None:
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("upartners").critical("uncaught exception", exc_info=(exc_type, exc, tb))

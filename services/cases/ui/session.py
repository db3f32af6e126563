"""Web sessions: a signed, HttpOnly, SameSite cookie holding the user's id and session epoch, and
a CSRF token that every state-changing request must send back (a form field or the
``X-CSRF-Token`` header). The key that signs cookies is ``UPARTNERS_SESSION_SECRET``; without
it, the embedded default makes one and keeps it in its data dir."""

from __future__ import annotations

import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask, g, request, session

from services.cases.handlers import sign_in
from services.cases.handlers.sign_in import SignedIn
from shared.settings import Settings
from shared.uow import ServiceStore

SECRET_FILE = "session-secret"
LIFETIME = timedelta(hours=12)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def configure(app: Flask, settings: Settings) -> None:
    app.secret_key = settings.session_secret or kept_secret(settings.data_dir)
    app.config.update(
        SESSION_COOKIE_NAME="upartners_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=LIFETIME,
    )


def kept_secret(data_dir: Path) -> str:
    """The data dir's session key, made on first use (readable by its owner only). Two processes
    starting at once agree: the first creates it, the other reads it."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def begin(signed_in: SignedIn) -> None:
    """A new session for this user (a fresh CSRF token too: nothing carries over)."""
    session.clear()
    session.permanent = True
    session["user"] = signed_in.actor.user_id
    session["epoch"] = signed_in.epoch
    csrf_token()


def end() -> None:
    session.clear()


def current(store: ServiceStore) -> SignedIn | None:
    """The signed-in user, once per request; None when the session ended (deactivated, a new
    password, or never signed in)."""
    if "signed_in" not in g:
        user_id, epoch = session.get("user"), session.get("epoch")
        found = None
        if isinstance(user_id, str) and isinstance(epoch, int):
            found = sign_in.session_user(store, user_id, epoch)
        if found is None and user_id is not None:
            session.clear()
        g.signed_in = found
    return g.signed_in


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    """Whether an unsafe request carries this session's CSRF token."""
    if request.method not in UNSAFE:
        return True
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    return isinstance(expected, str) and hmac.compare_digest(sent, expected)

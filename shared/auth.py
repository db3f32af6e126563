"""Secrets and credentials: generated once, stored hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

TIMESTAMP = re.compile(r"[0-9]{1,12}")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Secrets are 256 random bits, not passwords: a fast hash is enough to make a stolen
    # table useless for authenticating with a token.
    return hashlib.sha256(secret.encode()).hexdigest()


def token_matches(presented: str, stored_hashes: Iterable[str]) -> bool:
    presented_hash = hash_secret(presented)
    matched = False
    for stored in stored_hashes:  # no early exit: time does not tell which secret matched
        matched |= hmac.compare_digest(presented_hash, stored)
    return matched


def signature(signing_key: str, timestamp: str, delivery_id: str, body: bytes) -> str:
    """HMAC-SHA256 over ``timestamp.delivery_id.body``, keyed with the secret's SHA-256 hex."""
    message = f"{timestamp}.{delivery_id}.".encode() + body
    return hmac.new(signing_key.encode(), message, hashlib.sha256).hexdigest()


def signature_matches(
    stored_hashes: Iterable[str],
    *,
    timestamp: str,
    delivery_id: str,
    body: bytes,
    presented: str,
    now: float,
    window: int,
) -> bool:
    # Unix seconds: plain ASCII digits, at most 12 of them. int() alone would take "1_0", " 10"
    # or 400 digits, and a float comparison with a huge int raises OverflowError.
    if not TIMESTAMP.fullmatch(timestamp):
        return False
    if abs(now - int(timestamp)) > window:
        return False
    presented = presented.removeprefix("sha256=")
    matched = False
    for stored in stored_hashes:
        matched |= hmac.compare_digest(signature(stored, timestamp, delivery_id, body), presented)
    return matched

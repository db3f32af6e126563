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


# --- passwords ----------------------------------------------------------------------------------
# scrypt (memory-hard, in the standard library): 2**14 iterations of 8 x 128-byte blocks is 16 MiB
# and about 50 ms per check on this machine kind: cheap for a person, dear for a guesser.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str | None) -> bool:
    """True if ``password`` is the one ``stored`` was made from; False for no password."""
    if not stored:
        _scrypt(password, b"0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)  # the same time either way
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32
    )

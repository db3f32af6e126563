"""Signing in to the web pages: one-time links to set a password (invitations, resets),
passwords, sign-in with limits per account and per address, and the session's user.

A session carries the user's id and ``session_epoch``; deactivating the user or setting a new
password bumps the epoch, which ends every session at once. The API stays bearer-only: nothing
here is reachable with a token, and the API never reads a session.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from services.cases.domain import (
    FAILURE_WINDOW,
    LINK_LIFETIME,
    Actor,
    Forbidden,
    Invalid,
    TooManyAttempts,
    can_manage_user,
    password_problem,
    wait_before_sign_in,
)
from services.cases.handlers.access import actors_of
from services.cases.handlers.people import load_user
from services.cases.models import SignInFailure, SignInLink, User
from shared import auth
from shared.db import new_id, utcnow
from shared.uow import ServiceStore

PASSWORD_PROBLEMS = {
    "short": "At least 10 characters.",
    "long": "At most 200 characters.",
}


@dataclass(frozen=True)
class NewLink:
    """The only answer that ever carries a link's token: the link is shown once."""

    token: str
    purpose: str
    expires_at: datetime


@dataclass(frozen=True)
class SignedIn:
    actor: Actor
    epoch: int
    language: str | None


def make_link(store: ServiceStore, actor: Actor, user_id: str) -> NewLink:
    """A one-time link for a user to set a password: an invitation if they have none yet, else
    a reset. Administrators make them for anyone, managers for their partner's users."""
    with store.unit_of_work() as uow:
        session = uow.session
        user = load_user(session, actor, user_id)
        if not can_manage_user(actor, user.partner_id, user.role):
            raise Forbidden("Your role cannot invite this user.")
        if not user.active:
            raise Invalid({"user": ["The user is deactivated."]})
        purpose = "reset" if user.password_hash else "invite"
        token = auth.new_secret()
        now = utcnow()
        link = SignInLink(
            id=new_id(),
            user_id=user.id,
            token_hash=auth.hash_secret(token),
            purpose=purpose,
            created_at=now,
            expires_at=now + LINK_LIFETIME[purpose],
        )
        session.add(link)
        uow.commit()
        return NewLink(token, purpose, link.expires_at)


def link_holder(store: ServiceStore, token: str) -> tuple[str, str] | None:
    """(name, email) of the user a valid, unused link is for; None for any other token."""
    with store.unit_of_work() as uow:
        found = _valid_link(uow.session, token)
        if found is None:
            return None
        _, user = found
        return user.name, user.email


def set_password(store: ServiceStore, token: str, password: str) -> SignedIn | None:
    """Use a link: set the password (ending the user's other sessions), sign in. None if the
    link is unknown, used or expired; Invalid if the password will not do."""
    if problem := password_problem(password):
        raise Invalid({"password": [PASSWORD_PROBLEMS[problem]]})
    with store.unit_of_work() as uow:
        session = uow.session
        found = _valid_link(session, token)
        if found is None:
            return None
        link, user = found
        link.used_at = utcnow()
        user.password_hash = auth.hash_password(password)
        user.session_epoch += 1
        uow.commit()
        return SignedIn(actors_of(session, [user])[user.id], user.session_epoch, user.language)


def _valid_link(session, token: str) -> tuple[SignInLink, User] | None:
    link = session.scalar(
        select(SignInLink).where(SignInLink.token_hash == auth.hash_secret(token))
    )
    if link is None or link.used_at is not None or link.expires_at <= utcnow():
        return None
    user = session.get(User, link.user_id)
    if user is None or not user.active:
        return None
    return link, user


def sign_in(store: ServiceStore, email: str, password: str, address: str) -> SignedIn | None:
    """The user with this email and password, or None. Raises TooManyAttempts while the account
    or the address has failed too often in the window (checked before the password, so a
    guesser learns nothing more); every failure counts for both."""
    email = email.strip().lower()
    keys = {"account": f"account:{email}", "address": f"address:{address}"}
    with store.unit_of_work() as uow:
        session = uow.session
        now = utcnow()
        counters = {kind: _counter(session, key, now) for kind, key in keys.items()}
        for kind, counter in counters.items():
            wait = wait_before_sign_in(counter.failures, counter.window_start, now, kind)
            if wait is not None:
                raise TooManyAttempts(wait)
        users = session.scalars(
            select(User).where(func.lower(User.email) == email, User.active.is_(True))
        ).all()
        # The same person may belong to two orgs: the first whose password matches.
        user = next((u for u in users if auth.password_matches(password, u.password_hash)), None)
        if user is None:
            if not users:
                auth.password_matches(password, None)  # as long as a wrong password takes
            for counter in counters.values():
                counter.failures += 1
            uow.commit()
            return None
        session.delete(counters["account"])
        uow.commit()
        return SignedIn(actors_of(session, [user])[user.id], user.session_epoch, user.language)


def _counter(session, key: str, now: datetime) -> SignInFailure:
    counter = session.get(SignInFailure, key)
    if counter is None:
        counter = SignInFailure(key=key, failures=0, window_start=now)
        session.add(counter)
    elif now - counter.window_start >= FAILURE_WINDOW:
        counter.failures, counter.window_start = 0, now
    return counter


def session_user(store: ServiceStore, user_id: str, epoch: int) -> SignedIn | None:
    """The signed-in user of a session, while active and the session's epoch is current."""
    with store.unit_of_work() as uow:
        session = uow.session
        user = session.get(User, user_id)
        if user is None or not user.active or user.session_epoch != epoch:
            return None
        return SignedIn(actors_of(session, [user])[user.id], user.session_epoch, user.language)


def set_language(store: ServiceStore, actor: Actor, language: str | None) -> None:
    """The language of the user's pages; None: the browser's."""
    with store.unit_of_work() as uow:
        user = uow.session.get(User, actor.user_id)
        assert user is not None
        user.language = language
        uow.commit()


def change_password(store: ServiceStore, actor: Actor, current: str, new: str) -> SignedIn | None:
    """A new password for a signed-in user who knows the current one; None if they do not.
    Ends their other sessions (the caller starts a new one with the answer)."""
    if problem := password_problem(new):
        raise Invalid({"password": [PASSWORD_PROBLEMS[problem]]})
    with store.unit_of_work() as uow:
        session = uow.session
        user = session.get(User, actor.user_id)
        if user is None or not auth.password_matches(current, user.password_hash):
            return None
        user.password_hash = auth.hash_password(new)
        user.session_epoch += 1
        uow.commit()
        return SignedIn(actors_of(session, [user])[user.id], user.session_epoch, user.language)

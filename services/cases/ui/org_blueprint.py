"""The Organization section's blueprint, ``ui_admin`` at ``/org``, and what its modules share:
who may see it, and how a refusal the form itself should show is told from the others.
``admin_pages.py`` (users, partners, properties) and ``label_pages.py`` (labels) add its routes;
``admin_pages.register`` registers it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Blueprint, abort, g

from services.cases.domain import ADMINISTRATOR, MANAGER, Conflict, Invalid
from services.cases.ui.pages import _, do, protect

T = TypeVar("T")

bp = Blueprint("ui_admin", __name__, url_prefix="/org")
protect(bp)  # signed-in users only, CSRF, private headers: as every page


@bp.before_request
def _managers_only():
    if g.get("signed_in") and g.signed_in.actor.role not in (ADMINISTRATOR, MANAGER):
        abort(404)  # agents have no organization pages


def admins_only() -> None:
    if not g.signed_in.actor.is_admin:
        abort(404)


def attempt(command: Callable[[], T], known: dict[str, str]) -> tuple[T | None, str | None]:
    """``do(command)``, except that a conflict whose code is in ``known`` (or any ``Invalid``,
    when ``known`` has the key "INVALID") comes back as that message, for the page to show
    beside its form (a taken name...); other refusals are ``do()``'s message on the page."""
    problem: list[str] = []

    def run() -> T | None:
        try:
            return command()
        except (Conflict, Invalid) as exc:
            code = exc.code if isinstance(exc, Conflict) else "INVALID"
            if code in known:
                problem.append(known[code])
                return None
            raise

    result = do(run)
    return result, (problem[0] if problem else None)


def first_problem(messages: object) -> str:
    """The first message of marshmallow's nested error dict or list."""
    while isinstance(messages, list | dict):
        messages = next(iter(messages.values() if isinstance(messages, dict) else messages), "")
    return str(messages)


def role_names() -> dict[str, str]:
    return {"administrator": _("Administrator"), "manager": _("Manager"), "agent": _("Agent")}

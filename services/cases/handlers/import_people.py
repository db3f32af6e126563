"""The people a CasePro history names that the configuration import did not bring: a deleted
partner, a user without an email, a user of a deleted partner, a user who is no longer in the
org (or never was: a superuser such as ``root`` who opened a case). The history keeps who did
what, so each becomes a person here who can do nothing:

- a deleted partner: a partner named "<name> (deleted in CasePro)", restricted with no labels
  (it sees nothing);
- a user: inactive (cannot sign in), with their email, or ``casepro-user-<id>@import.invalid``
  when they had none or are not in the org (then named "CasePro user <id>": the source does
  not say more of them); a manager or agent with their partner (or its stand-in), anyone else
  an administrator (inactive all the same).

They are made through the same commands as the configuration (``create_partner``,
``create_user``, ``update_user``), linked under the kinds ``partners`` and ``users`` like the
others (so a run again finds them), made only when the history first names them, and listed in
the report's notes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from services.cases.domain import ADMINISTRATOR, Conflict, Invalid
from services.cases.handlers.people import create_partner, create_user, update_user
from services.cases.models import Partner, User

PLACEHOLDER_DOMAIN = "import.invalid"


class People:
    """CasePro's partner and user ids -> ours, making stand-ins for those without one."""

    def __init__(self, run: Any) -> None:  # importing._Import, which imports this module
        self.run = run
        self.partners = {p.id: p for p in run.source.partners()}
        self.users = {u.id: u for u in run.source.users()}
        self.partner_ids: dict[int, str] = {}
        self.user_ids: dict[int, str] = {}
        self.user_partner: dict[str, str | None] = {}  # our user -> our partner
        self.names: dict[str, str] = {}  # our partner or user id -> name
        self.reload()

    def reload(self) -> None:
        with self.run.store.db.session() as session:
            for user_id, partner_id, name in session.execute(
                select(User.id, User.partner_id, User.name).where(User.org == self.run.org)
            ):
                self.user_partner[user_id] = partner_id
                self.names[user_id] = name
            for partner_id, name in session.execute(
                select(Partner.id, Partner.name).where(Partner.org == self.run.org)
            ):
                self.names[partner_id] = name

    # --- partners -------------------------------------------------------------------------------
    def partner_key(self, partner_id: int) -> str:
        partner = self.partners.get(partner_id)
        return self.run._key(partner, partner.name) if partner else str(partner_id)

    def partner(self, partner_id: int | None) -> str | None:
        """Our partner for CasePro's; a stand-in is made for a deleted one."""
        if partner_id is None:
            return None
        if partner_id in self.partner_ids:
            return self.partner_ids[partner_id]
        key = self.partner_key(partner_id)
        target = self.run._target("partners", key)
        if target is None:
            source = self.partners.get(partner_id)
            name = source.name if source else f"CasePro partner {partner_id}"
            values = {
                "name": f"{name} (deleted in CasePro)"[:128],
                "description": (source.description if source else "") or "",
                "restricted": True,
                "labels": [],
            }
            try:
                made = create_partner(self.run.store, self.run.actor, values)
            except (Invalid, Conflict) as exc:  # its name taken: adopt that partner
                target = self.run._names(Partner).get(values["name"])
                if target is None:
                    raise exc
            else:
                target = made.id
                self.names[target] = made.name
            self.run._link("partners", key, target)
            self.run.report.counts["partners"]["created"] += 1
            self.run.report.notes.append(
                f"Partner {name}, deleted in CasePro, kept as '{values['name']}' (sees nothing): "
                "the history names it."
            )
        self.partner_ids[partner_id] = target
        return target

    # --- users ----------------------------------------------------------------------------------
    def user_key(self, user_id: int) -> str:
        user = self.users.get(user_id)
        if user is not None and user.email:
            return self.run._key(user, user.email.lower())
        return str(user_id)

    def user(self, user_id: int | None) -> str | None:
        """Our user for CasePro's (auth_user) id; a stand-in is made for one without."""
        if user_id is None:
            return None
        if user_id in self.user_ids:
            return self.user_ids[user_id]
        key = self.user_key(user_id)
        target = self.run._target("users", key)
        if target is None:
            target = self._stand_in(user_id, key)
        self.user_ids[user_id] = target
        return target

    def known_user(self, user_id: int) -> str | None:
        """Our user for CasePro's when there is one (no stand-in is made)."""
        if user_id in self.user_ids:
            return self.user_ids[user_id]
        return self.run._target("users", self.user_key(user_id))

    def _stand_in(self, user_id: int, key: str) -> str:
        source = self.users.get(user_id)
        email = (source.email if source else None) or f"casepro-user-{user_id}@{PLACEHOLDER_DOMAIN}"
        name = (source.full_name if source else "") or f"CasePro user {user_id}"
        role, partner = ADMINISTRATOR, None
        if source is not None and source.role != ADMINISTRATOR and source.partner_id is not None:
            role, partner = source.role, self.partner(source.partner_id)
        values = {"name": name[:128], "email": email, "role": role, "partner": partner}
        with self.run.store.db.session() as session:
            target = session.scalar(
                select(User.id).where(User.org == self.run.org, User.email == email.lower())
            )
        if target is None:  # made just before a crash, without its link: adopted above
            made = create_user(self.run.store, self.run.actor, values)
            target = made.id
        update_user(self.run.store, self.run.actor, target, {"active": False})
        self.user_partner[target] = partner
        self.names[target] = values["name"]
        self.run._link("users", key, target)
        self.run.report.counts["users"]["created"] += 1
        why = (
            "not in the org in CasePro"
            if source is None
            else "no email"
            if not source.email
            else "their partner was deleted"
        )
        self.run.report.notes.append(
            f"User {values['name']} ({why}) kept as an inactive {role} <{email}>: the history "
            "names them."
        )
        return target

"""Contacts as cases knows them: created from message events under a per-org HMAC pseudonym
(never a URN), and shown as that reference plus the one field the org chose to show."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from services.cases.answers_domain import engine_language
from services.cases.domain import (
    LONG_REF_LENGTH,
    display_value,
    pseudonym,
)
from services.cases.handlers.cache import cache_of
from services.cases.models import (
    Contact,
    Org,
)
from services.cases.views import ContactView
from shared import events as ev
from shared.db import dialect_insert, dialect_name, insert_statement, new_id, utcnow
from shared.events import Envelope


def ensure_contact(
    session: Session,
    org: Org,
    contact_uuid: str,
    *,
    fields: dict[str, Any] | None = None,
    fields_at: datetime | None = None,
    language: str | None = None,
) -> Contact:
    """The org's contact of this uuid, created (with these fields) if new.

    A new contact gets the short pseudonym unless another contact of the org has it already
    (``uq_contacts_ref`` tells, in the same INSERT), then the long one. Contacts created in this
    transaction are remembered in ``cache_of(session).new_contacts``.
    """
    known = cache_of(session)
    contact = known.contacts.get((org.key, contact_uuid)) or _contact_by_uuid(
        session, org, contact_uuid
    )
    if contact is None:
        values = {"fields": dict(fields or {}), "fields_at": fields_at, "language": language}
        short = pseudonym(org.pseudonym_salt, org.key, contact_uuid)
        contact = _insert_contact(session, org, contact_uuid, short, values)
        if contact is None:  # a replica created it a moment ago, or another contact has the ref
            contact = _contact_by_uuid(session, org, contact_uuid)
        if contact is None:
            long = pseudonym(org.pseudonym_salt, org.key, contact_uuid, LONG_REF_LENGTH)
            contact = _insert_contact(session, org, contact_uuid, long, values, any_conflict=False)
            contact = contact or _contact_by_uuid(session, org, contact_uuid)
        assert contact is not None
    known.contacts[(org.key, contact_uuid)] = contact
    return contact


def _insert_contact(
    session: Session,
    org: Org,
    contact_uuid: str,
    ref: str,
    values: dict[str, Any],
    *,
    any_conflict: bool = True,
) -> Contact | None:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: the new contact, or None when it collided
    (on its uuid, or with ``any_conflict`` also on its ref)."""
    statement = insert_statement(session, Contact).values(
        id=new_id(), org=org.key, uuid=contact_uuid, ref=ref, created_at=utcnow(), **values
    )
    statement = statement.on_conflict_do_nothing(
        index_elements=None if any_conflict else ["org", "uuid"]
    )
    contact = session.scalars(statement.returning(Contact)).first()
    if contact is not None:
        cache_of(session).new_contacts.add(contact.id)
    return contact


def _contact_by_uuid(session: Session, org: Org, contact_uuid: str) -> Contact | None:
    return session.scalar(
        select(Contact).where(Contact.org == org.key, Contact.uuid == contact_uuid)
    )


def contact_view(contact: Contact, org: Org) -> ContactView:
    return ContactView(
        contact.ref,
        display_value(contact.fields, org.display_field),
        engine_language(contact.language),
    )


def insert_contacts(session: Session, org: Org, new: dict[str, list[Envelope]]) -> None:
    """Insert contacts new to the org in the session's transaction, in one statement (see
    ``_new_contact_rows``); they go into ``cache_of(session)`` as new."""
    if not new:
        return
    statement = _contact_objects_insert(dialect_name(session))
    known = cache_of(session)
    for contact in session.scalars(statement, _new_contact_rows(org, new)):
        known.contacts[(org.key, contact.uuid)] = contact
        known.new_contacts.add(contact.id)


@functools.cache
def _contact_objects_insert(dialect: str) -> Any:
    """The same INSERT returning the contacts as ORM objects, built once per dialect."""
    return dialect_insert(dialect)(Contact).on_conflict_do_nothing().returning(Contact)


def insert_contacts_committed(
    connection: Connection, org: Org, new: dict[str, list[Envelope]]
) -> list[dict[str, Any]]:
    """The same in one statement on a connection in autocommit, outside any batch's
    transaction; answers the rows it inserted (all their columns)."""
    if not new:
        return []
    statement = _contacts_insert(dialect_name(connection))
    rows = connection.execute(statement, _new_contact_rows(org, new)).mappings()
    return [dict(row) for row in rows]


@functools.cache
def _contacts_insert(dialect: str) -> Any:
    """Built once per dialect, its rows passed as parameters (shared.db.dialect_insert)."""
    table = Contact.__table__
    return dialect_insert(dialect)(table).on_conflict_do_nothing().returning(*table.c)


def _new_contact_rows(org: Org, new: dict[str, list[Envelope]]) -> list[dict[str, Any]]:
    """Each contact with its short pseudonym and the fields of its newest message among the
    events (what handling them one by one leaves). One whose pseudonym another contact has is
    left out by the INSERT's conflict clause: ``ensure_contact`` handles it alone. In uuid
    order, so that two workers inserting the same contacts lock them in the same order."""
    rows = []
    for contact_uuid in sorted(new):
        received = [e.data for e in new[contact_uuid] if e.name == ev.MESSAGE_RECEIVED]
        newest = max(received, key=lambda data: data["received_at"], default=None)
        rows.append(
            {
                "id": new_id(),
                "org": org.key,
                "uuid": contact_uuid,
                "ref": pseudonym(org.pseudonym_salt, org.key, contact_uuid),
                "fields": dict(newest["contact_fields"]) if newest else {},
                "fields_at": newest["received_at"] if newest else None,
                "language": newest.get("language") if newest else None,
                "created_at": utcnow(),
            }
        )
    return rows

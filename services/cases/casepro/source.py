"""Reading one org out of a CasePro PostgreSQL database, read-only.

``CaseproDatabase(url, org)`` opens one psycopg connection whose every transaction is read-only
(the session's default, and the connection's own setting), in one REPEATABLE READ transaction:
every method sees the same snapshot, so a case read late still finds the messages read early.
Nothing is ever written; ``close()`` rolls the transaction back.

The small kinds come as lists. Contacts, messages, outgoing messages, cases and their actions
are generators over a server-side cursor fetching ``batch`` rows at a time, in id order, from
``after_id`` on: memory stays flat for a million messages, and an import cut short resumes after
the last id it wrote.

Every query is scoped to the org (``org_id``, or through the org's partners and role tables).
Contacts are read without ``name`` and ``urns``, outgoing messages without ``urn``: no query
selects them. ``contacts_contact.fields`` is an hstore; it is read as ``fields::jsonb`` (a cast
the hstore extension provides) so that psycopg need not know the hstore type.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import IsolationLevel

from services.cases.casepro.records import (
    Case,
    CaseAction,
    Contact,
    Faq,
    Field,
    Group,
    Label,
    Message,
    Org,
    Outgoing,
    Partner,
    User,
    parse_follow_up_flow,
    role_of,
)

T = TypeVar("T")

DEFAULT_BATCH = 5000


class CaseproError(Exception):
    """The CasePro database cannot be read as asked; the message says why."""


class OrgNotFound(CaseproError):
    pass


_ORG_COLUMNS = "id, name, subdomain, timezone, language, is_active, config"

GROUPS_SQL = """
SELECT id, uuid, name, suspend_from, is_active, is_dynamic, is_visible
FROM contacts_group WHERE org_id = %(org)s ORDER BY id"""

FIELDS_SQL = """
SELECT key, label, is_visible, is_active
FROM contacts_field WHERE org_id = %(org)s ORDER BY id"""

# The users who hold a role in the org; their partner is the org's partner they belong to (an
# active one first, as CasePro's get_partner picks).
USERS_SQL = """
WITH roles (user_id, code) AS (
    SELECT user_id, 'A' FROM orgs_org_administrators WHERE org_id = %(org)s
    UNION ALL SELECT user_id, 'M' FROM orgs_org_editors WHERE org_id = %(org)s
    UNION ALL SELECT user_id, 'Y' FROM orgs_org_viewers WHERE org_id = %(org)s
)
SELECT u.id, u.email, u.first_name, u.last_name, u.is_active, p.full_name, p.must_use_faq,
    array_agg(DISTINCT r.code),
    (SELECT pu.partner_id FROM cases_partner_users pu
        JOIN cases_partner pa ON pa.id = pu.partner_id
        WHERE pu.user_id = u.id AND pa.org_id = %(org)s
        ORDER BY pa.is_active DESC, pa.id LIMIT 1)
FROM roles r
JOIN auth_user u ON u.id = r.user_id
LEFT JOIN profiles_profile p ON p.user_id = u.id
GROUP BY u.id, p.id
ORDER BY u.id"""

PARTNERS_SQL = """
SELECT p.id, p.name, COALESCE(p.description, ''), p.is_restricted, p.is_active,
    ARRAY(SELECT pl.label_id FROM cases_partner_labels pl
          WHERE pl.partner_id = p.id ORDER BY pl.label_id)
FROM cases_partner p WHERE p.org_id = %(org)s ORDER BY p.id"""

LABELS_SQL = """
SELECT l.id, l.uuid, l.name, COALESCE(l.description, ''), l.is_active, l.is_synced, r.tests,
    ARRAY(SELECT w.user_id FROM msgs_label_watchers w WHERE w.label_id = l.id ORDER BY w.user_id)
FROM msgs_label l LEFT JOIN rules_rule r ON r.id = l.rule_id
WHERE l.org_id = %(org)s ORDER BY l.id"""

FAQS_SQL = """
SELECT f.id, f.question, f.answer, f.language, f.parent_id,
    ARRAY(SELECT fl.label_id FROM msgs_faq_labels fl WHERE fl.faq_id = f.id ORDER BY fl.label_id)
FROM msgs_faq f WHERE f.org_id = %(org)s ORDER BY f.id"""

# Not the contact's name nor its URNs: tests/integration/test_casepro_source.py checks this text.
CONTACTS_SQL = """
SELECT c.id, c.uuid, c.language, c.fields::jsonb,
    ARRAY(SELECT cg.group_id FROM contacts_contact_groups cg
          WHERE cg.contact_id = c.id ORDER BY cg.group_id),
    c.is_blocked, c.is_stopped, c.is_active, c.is_stub
FROM contacts_contact c WHERE c.org_id = %(org)s AND c.id > %(after)s ORDER BY c.id"""

MESSAGES_SQL = """
SELECT m.id, m.backend_id, m.contact_id, m.type, COALESCE(m.text, ''), m.created_on,
    m.is_flagged, m.is_archived, m.is_active, m.is_handled, m.case_id,
    ARRAY(SELECT ml.label_id FROM msgs_message_labels ml
          WHERE ml.message_id = m.id ORDER BY ml.label_id)
FROM msgs_message m WHERE m.org_id = %(org)s AND m.id > %(after)s ORDER BY m.id"""

OUTGOING_SQL = """
SELECT o.id, o.activity, COALESCE(o.text, ''), o.contact_id, o.reply_to_id, o.case_id,
    o.partner_id, o.created_by_id, o.created_on
FROM msgs_outgoing o WHERE o.org_id = %(org)s AND o.id > %(after)s ORDER BY o.id"""

CASES_SQL = """
SELECT c.id, c.contact_id, c.assignee_id, c.user_assignee_id, c.initial_message_id,
    COALESCE(c.summary, ''), c.opened_on, c.closed_on,
    ARRAY(SELECT cl.label_id FROM cases_case_labels cl
          WHERE cl.case_id = c.id ORDER BY cl.label_id),
    ARRAY(SELECT cw.user_id FROM cases_case_watchers cw
          WHERE cw.case_id = c.id ORDER BY cw.user_id)
FROM cases_case c WHERE c.org_id = %(org)s AND c.id > %(after)s ORDER BY c.id"""

ACTIONS_SQL = """
SELECT a.id, a.case_id, a.action, a.created_by_id, a.created_on, a.assignee_id,
    a.user_assignee_id, a.label_id, a.note
FROM cases_caseaction a WHERE a.org_id = %(org)s AND a.id > %(after)s ORDER BY a.id"""

COUNTS_SQL = {
    "groups": "SELECT count(*) FROM contacts_group WHERE org_id = %(org)s",
    "fields": "SELECT count(*) FROM contacts_field WHERE org_id = %(org)s",
    "users": """SELECT count(DISTINCT user_id) FROM (
        SELECT user_id FROM orgs_org_administrators WHERE org_id = %(org)s
        UNION ALL SELECT user_id FROM orgs_org_editors WHERE org_id = %(org)s
        UNION ALL SELECT user_id FROM orgs_org_viewers WHERE org_id = %(org)s) AS roles""",
    "partners": "SELECT count(*) FROM cases_partner WHERE org_id = %(org)s",
    "labels": "SELECT count(*) FROM msgs_label WHERE org_id = %(org)s",
    "faqs": "SELECT count(*) FROM msgs_faq WHERE org_id = %(org)s",
    "contacts": "SELECT count(*) FROM contacts_contact WHERE org_id = %(org)s",
    "messages": "SELECT count(*) FROM msgs_message WHERE org_id = %(org)s",
    "outgoing": "SELECT count(*) FROM msgs_outgoing WHERE org_id = %(org)s",
    "cases": "SELECT count(*) FROM cases_case WHERE org_id = %(org)s",
    "actions": "SELECT count(*) FROM cases_caseaction WHERE org_id = %(org)s",
}


# What an import from the database cannot bring, whatever the org.
DATABASE_GAPS = (
    "replies sent outside CasePro (by flows, or in RapidPro) are not in its database: a case's "
    "history has CasePro's own replies only",
    "groups taken from contacts while their case was open (suspended groups) are state, not read",
    "messages CasePro deleted when trimming old ones (TRIM_OLD_MESSAGES_DAYS) are gone",
)


def psycopg_url(url: str) -> str:
    """A libpq URL from a SQLAlchemy one as well (``postgresql+psycopg://``)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith("postgresql+"):
        return "postgresql://" + rest
    return url


def _ids(values: Sequence[int] | None) -> tuple[int, ...]:
    return tuple(values) if values else ()


def _org(row: Sequence[Any]) -> Org:
    org_id, name, subdomain, timezone, language, is_active, config = row
    common = config.get("common") if isinstance(config, dict) else None
    if not isinstance(common, dict):
        common = {}
    banner = common.get("banner_text")
    return Org(
        id=org_id,
        name=name,
        subdomain=subdomain,
        timezone=timezone,
        language=language,
        is_active=is_active,
        follow_up_flow=parse_follow_up_flow(common.get("follow_up_flow")),
        banner=banner if isinstance(banner, str) and banner.strip() else None,
    )


def _user(row: Sequence[Any]) -> User:
    user_id, email, first, last, is_active, full_name, must_use_faq, codes, partner_id = row
    if full_name is None:  # no profile: CasePro's own exports fall back to first and last name
        full_name = " ".join(part for part in (first, last) if part)
    role = role_of(codes)
    assert role is not None  # only users in a role table are selected
    return User(
        id=user_id,
        email=(email or "").strip() or None,
        full_name=full_name,
        is_active=is_active,
        role=role,
        partner_id=partner_id,
        must_use_faq=bool(must_use_faq),
    )


def _contact(row: Sequence[Any]) -> Contact:
    contact_id, uuid, language, fields, group_ids, blocked, stopped, active, stub = row
    return Contact(
        id=contact_id,
        uuid=uuid,
        language=language or None,
        fields=dict(fields) if fields else {},
        group_ids=_ids(group_ids),
        is_blocked=blocked,
        is_stopped=stopped,
        is_active=active,
        is_stub=stub,
    )


def _message(row: Sequence[Any]) -> Message:
    return Message(*row[:11], label_ids=_ids(row[11]))


def _case(row: Sequence[Any]) -> Case:
    return Case(*row[:8], label_ids=_ids(row[8]), watcher_ids=_ids(row[9]))


class CaseproDatabase:
    """One org of a CasePro database, read in one read-only snapshot. ``org`` is the org's id
    (digits) or subdomain. Use it as a context manager, or call ``close()``."""

    def __init__(self, url: str, org: str | int, *, batch: int = DEFAULT_BATCH) -> None:
        self._batch = batch
        self._cursor_numbers = itertools.count(1)
        try:
            self._conn = psycopg.connect(psycopg_url(url), autocommit=True)
        except psycopg.OperationalError as e:
            raise CaseproError(f"cannot connect to the CasePro database: {e}") from None
        try:
            # Read-only twice over: the session's default for any transaction, and this
            # connection's (BEGIN READ ONLY). UTC so that times come back in UTC.
            self._conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            self._conn.execute("SET TIME ZONE 'UTC'")
            self._conn.autocommit = False
            self._conn.read_only = True
            self._conn.isolation_level = IsolationLevel.REPEATABLE_READ
            self.org = self._find_org(str(org).strip())
        except BaseException:
            self._conn.close()
            raise

    def __enter__(self) -> CaseproDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._conn.closed:
            self._conn.rollback()
            self._conn.close()

    @property
    def connection(self) -> psycopg.Connection:
        """The read-only connection, for a caller's own queries (tests, diagnostics)."""
        return self._conn

    def _find_org(self, wanted: str) -> Org:
        try:
            row = None
            if wanted.isdigit():
                row = self._conn.execute(
                    f"SELECT {_ORG_COLUMNS} FROM orgs_org WHERE id = %s", (int(wanted),)
                ).fetchone()
            if row is None:
                row = self._conn.execute(
                    f"SELECT {_ORG_COLUMNS} FROM orgs_org WHERE subdomain = %s", (wanted,)
                ).fetchone()
            if row is not None:
                return _org(row)
            known = self._conn.execute(
                "SELECT id, subdomain FROM orgs_org ORDER BY id LIMIT 20"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            raise CaseproError("not a CasePro database: it has no orgs_org table") from None
        listed = ", ".join(f"{i} ({s})" for i, s in known) or "none"
        raise OrgNotFound(f"no CasePro org has the id or subdomain {wanted!r}; orgs: {listed}")

    def _all(self, sql: str, make: Callable[[Sequence[Any]], T]) -> list[T]:
        return [make(row) for row in self._conn.execute(sql, {"org": self.org.id})]

    def _stream(
        self, kind: str, sql: str, after_id: int, make: Callable[[Sequence[Any]], T]
    ) -> Iterator[T]:
        name = f"casepro_{kind}_{next(self._cursor_numbers)}"
        with self._conn.cursor(name=name) as cursor:
            cursor.itersize = self._batch
            cursor.execute(sql, {"org": self.org.id, "after": after_id})
            for row in cursor:
                yield make(row)

    def counts(self) -> dict[str, int]:
        """Rows of each kind of records.KINDS in the org (for a dry run)."""
        params = {"org": self.org.id}
        return {
            kind: self._conn.execute(sql, params).fetchone()[0]  # type: ignore[index]
            for kind, sql in COUNTS_SQL.items()
        }

    def notes(self) -> list[str]:
        """What CasePro's database does not hold, for the import's report."""
        return list(DATABASE_GAPS)

    def groups(self) -> list[Group]:
        return self._all(GROUPS_SQL, lambda row: Group(*row))

    def fields(self) -> list[Field]:
        return self._all(FIELDS_SQL, lambda row: Field(*row))

    def users(self) -> list[User]:
        """The users holding a role in the org (not those of its partners without one, nor
        superusers such as ``root``)."""
        return self._all(USERS_SQL, _user)

    def partners(self) -> list[Partner]:
        return self._all(PARTNERS_SQL, lambda row: Partner(*row[:5], label_ids=_ids(row[5])))

    def labels(self) -> list[Label]:
        return self._all(LABELS_SQL, _label)

    def faqs(self) -> list[Faq]:
        return self._all(FAQS_SQL, lambda row: Faq(*row[:5], label_ids=_ids(row[5])))

    def contacts(self, after_id: int = 0) -> Iterator[Contact]:
        return self._stream("contacts", CONTACTS_SQL, after_id, _contact)

    def messages(self, after_id: int = 0) -> Iterator[Message]:
        return self._stream("messages", MESSAGES_SQL, after_id, _message)

    def outgoing(self, after_id: int = 0) -> Iterator[Outgoing]:
        return self._stream("outgoing", OUTGOING_SQL, after_id, lambda row: Outgoing(*row))

    def cases(self, after_id: int = 0) -> Iterator[Case]:
        return self._stream("cases", CASES_SQL, after_id, _case)

    def actions(self, after_id: int = 0) -> Iterator[CaseAction]:
        return self._stream("actions", ACTIONS_SQL, after_id, lambda row: CaseAction(*row))


def _label(row: Sequence[Any]) -> Label:
    label_id, uuid, name, description, is_active, is_synced, tests, watcher_ids = row
    return Label(
        id=label_id,
        uuid=uuid or None,
        name=name,
        description=description,
        is_active=is_active,
        is_synced=is_synced,
        rule_tests=_parse_tests(tests),
        watcher_ids=_ids(watcher_ids),
    )


def _parse_tests(text: str | None) -> Any:
    """rules_rule.tests is TEXT holding JSON; kept as the text when it is not JSON, for
    rules.translate_rule() to report."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text

"""Reading the two files of CasePro's ``manage.py tickets_migrate <org id>``, as the same records
as the database reader (records.CaseproSource), for an org whose database is out of reach.

- ``<Org>_cases.json``: one JSON array of every case, by id:
  ``{"id", "opened_on", "closed_on", "summary", "contact": uuid,
  "assignee": {"partner": name, "user": email or null}, "labels": [names]}``.
- ``<Org>_agents.csv``: ``Email,Name,Partner``, one row per user of each active partner (excel
  dialect; a UTF-8 byte order mark is tolerated).

The files name partners, users and labels, and carry no ids but the cases'. So this reader
numbers them itself, and the records refer to each other by those numbers as by CasePro's ids:
partners by name and labels by name (each sorted, from 1), users in the agents file's order then
the unknown assigned users by email, contacts in the order the cases first name them. These ids
hold within one reading; the natural keys (names, emails, contact uuids) are what a writer
matches on across readings. Cases keep their CasePro ids.

The cases file is streamed, not loaded: an org of 100,000 cases is some 30 MB of JSON and
several times that as Python objects, and a reader that holds one case at a time stays at a few
MB. It is read twice: once when opened, to number partners, users, labels and contacts (keeping
only those keys), and again by each ``cases()``.

What the files cannot say is in ``notes()`` (roles, administrators, rules, history...).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from services.cases.casepro.records import (
    KINDS,
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
)

CASES_SUFFIX = "_cases.json"
AGENTS_SUFFIX = "_agents.csv"
AGENTS_HEADER = ("email", "name", "partner")
CHUNK = 64 * 1024


class MigrateFileError(ValueError):
    """A tickets_migrate file is not as CasePro writes it; the message says where."""


def iter_json_array(stream: TextIO, chunk_size: int = CHUNK) -> Iterator[dict[str, Any]]:
    """The objects of a JSON array, one at a time, reading ``stream`` a chunk at a time."""
    decoder = json.JSONDecoder()
    buffer, position, eof = "", 0, False

    def more() -> bool:
        nonlocal buffer, position, eof
        if eof:
            return False
        # Double the read while one object does not fit, so a huge object costs no more than
        # a few passes.
        chunk = stream.read(max(chunk_size, len(buffer) - position))
        buffer, position = buffer[position:] + chunk, 0
        eof = not chunk
        return bool(chunk)

    def next_char() -> str:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n":
                position += 1
            if position < len(buffer):
                return buffer[position]
            if not more():
                return ""

    if next_char() != "[":
        raise MigrateFileError("the cases file is not a JSON array")
    position += 1
    if next_char() == "]":
        return
    while True:
        if next_char() != "{":
            raise MigrateFileError("the cases file's array holds something else than objects")
        while True:
            try:
                item, end = decoder.raw_decode(buffer, position)
                break
            except json.JSONDecodeError as e:
                if not more():
                    raise MigrateFileError(f"the cases file is cut short or broken: {e}") from None
        position = end
        yield item
        separator = next_char()
        position += 1
        if separator == "]":
            return
        if separator != ",":
            raise MigrateFileError(f"the cases file has {separator or 'its end'!r} after a case")


def parse_time(value: object, what: str) -> datetime:
    """An ISO-8601 time as CasePro's isoformat() writes it, in UTC (a time without an offset is
    taken as UTC)."""
    if not isinstance(value, str):
        raise MigrateFileError(f"{what} is not a time: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MigrateFileError(f"{what} is not an ISO-8601 time: {value!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class FileCase:
    """One entry of the cases file, checked, with names where the records have ids."""

    id: int
    opened_on: datetime
    closed_on: datetime | None
    summary: str
    contact_uuid: str
    partner: str
    user_email: str | None
    labels: tuple[str, ...]


def parse_case(item: Mapping[str, Any], number: int) -> FileCase:
    where = f"case #{number}"
    try:
        case_id = item["id"]
        assignee = item["assignee"]
        partner, user = assignee["partner"], assignee.get("user")
        contact, labels = item["contact"], item.get("labels") or []
    except (KeyError, TypeError) as e:
        raise MigrateFileError(f"{where}: missing {e}") from None
    if not isinstance(case_id, int) or isinstance(case_id, bool):
        raise MigrateFileError(f"{where}: id {case_id!r} is not a number")
    where = f"case {case_id}"
    if not isinstance(contact, str) or not contact:
        raise MigrateFileError(f"{where}: contact {contact!r} is not a uuid")
    if not isinstance(partner, str) or not partner:
        raise MigrateFileError(f"{where}: assignee partner {partner!r} is not a name")
    if user is not None and not isinstance(user, str):
        raise MigrateFileError(f"{where}: assignee user {user!r} is not an email")
    if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
        raise MigrateFileError(f"{where}: labels {labels!r} are not names")
    closed = item.get("closed_on")
    summary = item.get("summary")
    return FileCase(
        id=case_id,
        opened_on=parse_time(item.get("opened_on"), f"{where}: opened_on"),
        closed_on=None if closed is None else parse_time(closed, f"{where}: closed_on"),
        summary=summary if isinstance(summary, str) else "",
        contact_uuid=contact,
        partner=partner,
        user_email=(user or "").strip() or None,
        labels=tuple(labels),
    )


@dataclass(frozen=True, slots=True)
class Agent:
    email: str
    name: str
    partner: str


def read_agents(stream: TextIO) -> list[Agent]:
    """The rows of an agents file (open it with ``newline=""``), checked. A user without an
    email (CasePro allows one) has an empty ``email``."""
    rows = csv.reader(stream, dialect="excel")
    header = next(rows, None)
    if header:  # a byte order mark, when the file was not opened as utf-8-sig
        header[0] = header[0].removeprefix("\ufeff")
    if header is None or tuple(cell.strip().lower() for cell in header) != AGENTS_HEADER:
        raise MigrateFileError(f"the agents file's header is {header!r}, not Email,Name,Partner")
    agents = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 3:
            raise MigrateFileError(f"agents file line {line}: {len(row)} cells, not 3")
        email, name, partner = (cell.strip() for cell in row)
        if not partner:
            raise MigrateFileError(f"agents file line {line}: no partner")
        agents.append(Agent(email=email, name=name, partner=partner))
    return agents


def _email_key(email: str) -> str:
    return email.strip().casefold()


def org_name_of(cases_path: Path) -> str:
    """The org's name from a file's name: CasePro wrote it with each space made ``_`` (an ``_``
    of the name itself comes back as a space)."""
    base = cases_path.name.removesuffix(CASES_SUFFIX)
    return base.replace("_", " ")


def find_export(folder: Path, org_name: str | None = None) -> tuple[Path, Path | None]:
    """The cases file (and the agents file beside it, if there) in ``folder``: the only one,
    or the one of ``org_name``."""
    found = sorted(folder.glob(f"*{CASES_SUFFIX}"))
    if org_name is not None:
        found = [p for p in found if p.name == org_name.replace(" ", "_") + CASES_SUFFIX]
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise MigrateFileError(f"expected one *{CASES_SUFFIX} file in {folder}, found {names}")
    agents = found[0].with_name(found[0].name.removesuffix(CASES_SUFFIX) + AGENTS_SUFFIX)
    return found[0], agents if agents.exists() else None


class MigrateExport:
    """One org's tickets_migrate files, as a records.CaseproSource."""

    def __init__(self, cases_path: Path, agents_path: Path | None = None) -> None:
        self._cases_path = Path(cases_path)
        self.org = Org(
            id=None,
            name=org_name_of(self._cases_path),
            subdomain=None,
            timezone=None,
            language=None,
            is_active=True,
            follow_up_flow=None,
            banner=None,
        )
        self._notes: list[str] = []
        agents: list[Agent] = []
        if agents_path is not None:
            with Path(agents_path).open(encoding="utf-8-sig", newline="") as stream:
                agents = read_agents(stream)
        else:
            self._notes.append("no agents file: the assigned users are known by email only")
        self._index(agents)

    def _index(self, agents: list[Agent]) -> None:
        partner_names, label_names, assigned = set(), set(), {}
        self._contact_ids: dict[str, int] = {}
        self._case_count = 0
        for case in self._read_cases():
            self._case_count += 1
            partner_names.add(case.partner)
            label_names.update(case.labels)
            self._contact_ids.setdefault(case.contact_uuid, len(self._contact_ids) + 1)
            if case.user_email:
                assigned.setdefault(_email_key(case.user_email), (case.user_email, case.partner))
        csv_partners = {agent.partner for agent in agents}
        self._partner_ids = {n: i for i, n in enumerate(sorted(partner_names | csv_partners), 1)}
        self._label_ids = {name: i for i, name in enumerate(sorted(label_names), 1)}

        self._users: list[User] = []
        self._user_ids: dict[str, int] = {}
        duplicates = without_email = 0
        for agent in agents:
            key = _email_key(agent.email)
            if not key:
                without_email += 1
                continue
            if key in self._user_ids:
                duplicates += 1
                continue
            self._add_user(agent.email, agent.name, self._partner_ids[agent.partner], True)
        unknown = sorted(key for key in assigned if key not in self._user_ids)
        for key in unknown:
            email, partner = assigned[key]
            self._add_user(email, "", self._partner_ids[partner], False)

        if agents:
            self._notes.append(
                f"the agents file does not tell partner managers from data analysts: its "
                f"{len(self._users) - len(unknown)} users are read as agents"
            )
        self._notes.append("org administrators are not in the export: none is read")
        if without_email:
            self._notes.append(
                f"{without_email} rows of the agents file have no email: skipped (a user signs "
                "in by email)"
            )
        if duplicates:
            self._notes.append(f"{duplicates} rows of the agents file repeat an email: skipped")
        if unknown:
            self._notes.append(
                f"{len(unknown)} users assigned to cases are not in the agents file (removed "
                "from their partner, or their partner is inactive): read as inactive agents"
            )
        if only_assigned := partner_names - csv_partners:
            self._notes.append(
                f"{len(only_assigned)} partners appear only as assignees (no user in the agents "
                "file, or inactive): read as active"
            )
        self._notes.append(
            "labels are the names on cases: no rules, no watchers, and deleted labels cannot be "
            "told apart"
        )
        self._notes.append(
            "not in the export: messages, replies, case actions and notes, watchers, contacts' "
            "details and groups, contact fields, FAQs, partners' labels and restrictions"
        )

    def _add_user(self, email: str, name: str, partner_id: int, active: bool) -> None:
        user = User(
            id=len(self._users) + 1,
            email=email,
            full_name=name,
            is_active=active,
            role="agent",
            partner_id=partner_id,
            must_use_faq=False,
        )
        self._users.append(user)
        self._user_ids[_email_key(email)] = user.id

    def _read_cases(self) -> Iterator[FileCase]:
        with self._cases_path.open(encoding="utf-8-sig") as stream:
            for number, item in enumerate(iter_json_array(stream), start=1):
                yield parse_case(item, number)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        counts.update(
            users=len(self._users),
            partners=len(self._partner_ids),
            labels=len(self._label_ids),
            contacts=len(self._contact_ids),
            cases=self._case_count,
        )
        return counts

    def notes(self) -> list[str]:
        return list(self._notes)

    def groups(self) -> list[Group]:
        return []

    def fields(self) -> list[Field]:
        return []

    def users(self) -> list[User]:
        return list(self._users)

    def partners(self) -> list[Partner]:
        return [
            Partner(id=i, name=n, description="", is_restricted=False, is_active=True, label_ids=())
            for n, i in self._partner_ids.items()
        ]

    def labels(self) -> list[Label]:
        return [
            Label(
                id=i,
                uuid=None,
                name=name,
                description="",
                is_active=True,
                is_synced=False,
                rule_tests=None,
                watcher_ids=(),
            )
            for name, i in self._label_ids.items()
        ]

    def faqs(self) -> list[Faq]:
        return []

    def contacts(self, after_id: int = 0) -> Iterator[Contact]:
        for uuid, contact_id in self._contact_ids.items():
            if contact_id > after_id:
                yield Contact(
                    id=contact_id,
                    uuid=uuid,
                    language=None,
                    fields={},
                    group_ids=(),
                    is_blocked=False,
                    is_stopped=False,
                    is_active=True,
                    is_stub=False,
                )

    def messages(self, after_id: int = 0) -> Iterator[Message]:
        return iter(())

    def outgoing(self, after_id: int = 0) -> Iterator[Outgoing]:
        return iter(())

    def cases(self, after_id: int = 0) -> Iterator[Case]:
        for case in self._read_cases():
            if case.id <= after_id:
                continue
            try:
                user_id = self._user_ids[_email_key(case.user_email)] if case.user_email else None
                contact_id = self._contact_ids[case.contact_uuid]
                partner_id = self._partner_ids[case.partner]
                label_ids = tuple(sorted({self._label_ids[name] for name in case.labels}))
            except KeyError as e:
                raise MigrateFileError(f"the cases file changed while read: {e} is new") from None
            yield Case(
                id=case.id,
                contact_id=contact_id,
                assignee_id=partner_id,
                user_assignee_id=user_id,
                initial_message_id=None,
                summary=case.summary,
                opened_on=case.opened_on,
                closed_on=case.closed_on,
                label_ids=label_ids,
                watcher_ids=(),
            )

    def actions(self, after_id: int = 0) -> Iterator[CaseAction]:
        return iter(())

"""Importing a CasePro org's history, after its configuration (importing.py): contacts, cases
with their labels and watchers, messages with their labels, replies, and the cases' actions.

The rows are the cases service's own state, written here in its own transactions: a batch of
source rows (``BATCH``) at a time, by multi-row INSERTs (SQLAlchemy Core, on SQLite as on
PostgreSQL). **No events** are emitted: nothing another service does with past messages and
cases, and flowbridge would act on them (remove groups, start the follow-up flow, send the
replies). Imported replies are ``sent`` already (``sent_on`` their time), so none is ever sent.

Ids are derived, ``uuid5(NAMESPACE, "<source>:<kind>:<CasePro id>")``, so that what refers to
what (a message's case, a reply's message, a case's first message) is computed without lookups.
Contacts may be here already (made by the webhooks, or an org merged into): each batch looks
its uuids up and inserts only the missing ones, with the reference ``ensure_contact`` gives.

Resumable: each kind but contacts keeps a cursor, an ``ImportLink`` of kind ``cursor`` holding
the last CasePro id done, written in the transaction of the batch it covers; a run reads each
kind after its cursor, so a second run inserts nothing and one cut short goes on where it
stopped. Contacts are read whole every run (the other kinds need their ids), and only the
missing ones inserted.

Afterwards the statistics and the folder counts are rebuilt for the org from what is now there.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.orm import Session

from services.cases.casepro import records as cp
from services.cases.domain import LONG_REF_LENGTH, pseudonym
from services.cases.handlers import statistics
from services.cases.handlers.counts import rebuild_message_counts
from services.cases.handlers.import_people import People
from services.cases.models import (
    Case,
    CaseAction,
    CaseLabel,
    CaseWatcher,
    Contact,
    ImportLink,
    Message,
    MessageLabel,
    Org,
    Outgoing,
)
from shared.db import utcnow

NAMESPACE = uuid.UUID("0b5f3a52-6f1e-4c1b-9a55-2c1e7d4a9c16")
BATCH = 2_000  # source rows per transaction
PROGRESS_EVERY = 10_000
CURSOR = "cursor"
REBUILT = "rebuilt"  # a cursor link: "1" once the statistics count what was imported
KINDS = ("contacts", "cases", "messages", "outgoing", "actions")
ACTION_KINDS = {"O": "open", "S": "summary", "N": "note", "A": "reassign", "L": "labels"}
ACTION_KINDS |= {"U": "labels", "C": "close", "R": "reopen"}


def derived_id(source: str, kind: str, key: object) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{source}:{kind}:{key}"))


class History:
    def __init__(self, run: Any) -> None:  # importing._Import, which imports this module
        self.imp, self.store, self.org = run, run.store, run.org
        self.name, self.report, self.source = run.name, run.report, run.source
        self.contacts: dict[int, str] = {}  # CasePro contact id -> ours
        self.case_ids: set[str] = set()  # the org's cases (imported or not)
        self.closures: list[dict[str, Any]] = []  # close actions the import adds (one open case)

    def run(self) -> None:
        if self.imp.dry_run:
            counts = self.source.counts()
            for kind in KINDS:
                self.report.counts[kind]["created"] += counts.get(kind, 0)
            self.report.notes.append(
                "Dry run: the history is counted as CasePro holds it; a run skips some of it "
                "(deleted messages, forwards) and says why."
            )
            return
        self.people = People(self.imp)
        with self.store.db.session() as session:
            org = session.get(Org, self.org)
            assert org is not None
            self.salt = org.pseudonym_salt
        self.labels = {
            label.id: self.imp._target("labels", self.imp._label_key(label.id))
            for label in self.source.labels()
        }
        self._phase("contacts", self.source.contacts, self._contacts, resume=False)
        self._load_cases()
        self._phase("cases", self.source.cases, self._cases, self._case_people)
        self._load_cases()
        self._phase("messages", self.source.messages, self._messages)
        self.skipped_messages = {
            int(key) for key, target in self.imp._load_links("messages").items() if target is None
        }
        self._phase("outgoing", self.source.outgoing, self._outgoing, self._outgoing_people)
        self._phase("actions", self.source.actions, self._actions, self._action_people)
        self._rebuild()

    # --- batches --------------------------------------------------------------------------------
    def _cursor(self, kind: str) -> int:
        with self.store.db.session() as session:
            link = session.get(ImportLink, (self.org, self.name, CURSOR, kind))
            return int(link.target_id) if link is not None and link.target_id else 0

    def _set_cursor(self, session: Session, kind: str, value: str) -> None:
        session.merge(
            ImportLink(org=self.org, source=self.name, kind=CURSOR, source_id=kind, target_id=value)
        )

    def _phase(
        self,
        kind: str,
        read: Callable[[int], Iterator[Any]],
        write: Callable[[Session, list[Any]], int],
        prepare: Callable[[list[Any]], None] | None = None,
        *,
        resume: bool = True,
    ) -> None:
        started = time.perf_counter()
        after = self._cursor(kind) if resume else 0
        if after:
            self.imp.progress(f"{kind}: resuming after CasePro id {after}")
        seen, shown = 0, 0
        for batch in _batches(read(after), BATCH):
            if prepare is not None:
                prepare(batch)  # people made before the batch's transaction: they have their own
            with self.store.db.session() as session, session.begin():
                created = write(session, batch)
                if resume:
                    self._set_cursor(session, kind, str(batch[-1].id))
                if created:
                    self._set_cursor(session, REBUILT, "0")
            seen += len(batch)
            if seen - shown >= PROGRESS_EVERY:
                shown = seen
                rate = seen / max(time.perf_counter() - started, 1e-6)
                self.imp.progress(f"{kind}: {seen:,} read, {rate:,.0f} rows/s")
        took = time.perf_counter() - started
        self.report.timings[kind] = took
        counts = self.report.counts[kind]
        self.imp.progress(
            f"{kind}: {seen:,} read in {took:.1f} s: {counts['created']:,} new, "
            f"{counts['existing']:,} already there, {counts['skipped']:,} skipped"
        )

    def _insert(self, session: Session, model: type, rows: list[dict[str, Any]]) -> None:
        """Core's multi-row INSERT on the table (the ORM's bulk path costs more per row)."""
        if rows:
            session.connection().execute(insert(model.__table__), rows)

    def _id(self, kind: str, key: int | None) -> str | None:
        return None if key is None else derived_id(self.name, kind, key)

    def _load_cases(self) -> None:
        with self.store.db.session() as session:
            self.case_ids = set(session.scalars(select(Case.id).where(Case.org == self.org)))

    # --- contacts -------------------------------------------------------------------------------
    def _contacts(self, session: Session, batch: list[cp.Contact]) -> int:
        wanted = {contact.uuid: contact for contact in batch}
        existing = dict(
            session.execute(
                select(Contact.uuid, Contact.id).where(
                    Contact.org == self.org, Contact.uuid.in_(list(wanted))
                )
            ).all()
        )
        new = [c for c in wanted.values() if c.uuid not in existing]
        short = {c.uuid: pseudonym(self.salt, self.org, c.uuid) for c in new}
        taken = set(
            session.scalars(
                select(Contact.ref).where(
                    Contact.org == self.org, Contact.ref.in_(list(short.values()))
                )
            )
        )
        rows, now = [], utcnow()
        for contact in new:
            ref = short[contact.uuid]
            if ref in taken:  # as ensure_contact does: the long form when the short is taken
                ref = pseudonym(self.salt, self.org, contact.uuid, LONG_REF_LENGTH)
            taken.add(ref)
            existing[contact.uuid] = derived_id(self.org, "contact", contact.uuid)
            rows.append(
                {
                    "id": existing[contact.uuid],
                    "org": self.org,
                    "uuid": contact.uuid,
                    "ref": ref,
                    "fields": dict(contact.fields or {}),
                    "fields_at": None,  # the next message's fields replace these
                    "language": contact.language,
                    "created_at": now,
                }
            )
        self._insert(session, Contact, rows)
        for contact in batch:
            self.contacts[contact.id] = existing[contact.uuid]
        counts = self.report.counts["contacts"]
        counts["created"] += len(rows)
        counts["existing"] += len(batch) - len(rows)
        return len(rows)

    # --- cases ----------------------------------------------------------------------------------
    def _case_people(self, batch: list[cp.Case]) -> None:
        for record in batch:
            self.people.partner(record.assignee_id)
            for user_id in (record.user_assignee_id, *record.watcher_ids):
                self.people.user(user_id)

    def _cases(self, session: Session, batch: list[cp.Case]) -> int:
        rows, labels, watchers = [], [], []
        for record in batch:
            contact = self.contacts.get(record.contact_id)
            if contact is None:
                self.report.skip_many("cases", "its contact is not in the source")
                continue
            case_id = self._id("case", record.id)
            rows.append(
                {
                    "id": case_id,
                    "org": self.org,
                    "contact_id": contact,
                    "summary": record.summary,
                    "partner_id": self.people.partner(record.assignee_id),
                    "user_id": self.people.user(record.user_assignee_id),
                    "opened_by": None,  # the open action's user, when the actions come
                    "initial_message_id": self._id("message", record.initial_message_id),
                    "opened_on": record.opened_on,
                    "reopened_on": None,
                    "closed_on": record.closed_on,
                    "close_count": 0,
                    "stats_clock": {},
                    "case_version": 1,
                }
            )
            for label_id in record.label_ids:
                target = self.labels.get(label_id)
                if target is None:
                    self.report.skip_many("case labels", "a label not imported (deleted)")
                else:
                    labels.append({"case_id": case_id, "label_id": target})
            for user_id in record.watcher_ids:
                watchers.append({"case_id": case_id, "user_id": self.people.user(user_id)})
        self._one_open_case_each(session, rows)
        self._insert(session, Case, rows)
        self._insert(session, CaseAction, self.closures)
        self.closures.clear()
        self._insert(session, CaseLabel, labels)
        self._insert(session, CaseWatcher, watchers)
        self.case_ids.update(row["id"] for row in rows)
        self.report.counts["cases"]["created"] += len(rows)
        return len(rows)

    def _one_open_case_each(self, session: Session, rows: list[dict[str, Any]]) -> None:
        """Here a contact has one open case at most (uq_cases_open_contact). When CasePro had
        two, the newer stays open and the older is closed when the newer opened, with a close
        action saying so (and counted in the report)."""
        opening = [row for row in rows if row["closed_on"] is None]
        if not opening:
            return
        open_now = {
            contact: (case_id, opened_on)
            for case_id, contact, opened_on in session.execute(
                select(Case.id, Case.contact_id, Case.opened_on).where(
                    Case.contact_id.in_({row["contact_id"] for row in opening}),
                    Case.closed_on.is_(None),
                )
            )
        }
        for row in opening:
            other = open_now.get(row["contact_id"])
            if other is not None:
                older_id, newer_on = other[0], row["opened_on"]
                if other[1] > row["opened_on"]:  # this one is the older
                    older_id, newer_on = row["id"], other[1]
                self._close_older(session, rows, older_id, newer_on)
                if older_id == row["id"]:
                    continue
            open_now[row["contact_id"]] = (row["id"], row["opened_on"])

    def _close_older(self, session, rows, case_id: str, when) -> None:
        mine = next((row for row in rows if row["id"] == case_id), None)
        if mine is not None:
            mine["closed_on"] = when
        else:
            session.execute(update(Case).where(Case.id == case_id).values(closed_on=when))
        self.report.reasons[
            ("cases", "closed by the import: the contact had a newer open case (one open here)")
        ] += 1
        self.closures.append(
            {
                "id": derived_id(self.name, "import-close", case_id),
                "case_id": case_id,
                "kind": "close",
                "user_id": None,
                "note": "Closed by the CasePro import: the contact had a newer open case.",
                "data": {},
                "created_at": when,
            }
        )

    # --- messages -------------------------------------------------------------------------------
    def _messages(self, session: Session, batch: list[cp.Message]) -> int:
        rows, labels, skipped = [], [], []
        for record in batch:
            contact = self.contacts.get(record.contact_id)
            why = None
            if not record.is_active:
                why = "deleted in CasePro"
            elif contact is None:
                why = "its contact is not in the source"
            if why is not None:
                self.report.skip_many("messages", why)
                skipped.append(self._skip_link("messages", record.id))
                continue
            message_id = self._id("message", record.id)
            case_id = self._id("case", record.case_id)
            rows.append(
                {
                    "id": message_id,
                    "org": self.org,
                    "contact_id": contact,
                    "external_id": str(record.backend_id),
                    "text": record.text,
                    "attachments": [],
                    "received_at": record.created_on,
                    "labelled": True,
                    "labeler_labels": [],
                    "flagged": record.is_flagged,
                    "archived": record.is_archived,
                    "simulation": False,
                    "case_id": case_id if case_id in self.case_ids else None,
                    "created_at": record.created_on,
                }
            )
            for label_id in record.label_ids:
                target = self.labels.get(label_id)
                if target is None:
                    self.report.skip_many("message labels", "a label not imported (deleted)")
                else:
                    labels.append({"message_id": message_id, "label_id": target})
        self._insert(session, Message, rows)
        self._insert(session, MessageLabel, labels)
        self._insert(session, ImportLink, skipped)
        self.report.counts["messages"]["created"] += len(rows)
        return len(rows)

    def _skip_link(self, kind: str, key: int) -> dict[str, Any]:
        """Read and left out: what refers to it knows (a reply to a deleted message)."""
        return {
            "org": self.org,
            "source": self.name,
            "kind": kind,
            "source_id": str(key),
            "target_id": None,
            "created_at": utcnow(),
        }

    # --- replies --------------------------------------------------------------------------------
    def _outgoing_people(self, batch: list[cp.Outgoing]) -> None:
        for record in batch:
            if record.contact_id is not None:
                self.people.partner(record.partner_id)
                self.people.user(record.created_by_id)

    def _outgoing(self, session: Session, batch: list[cp.Outgoing]) -> int:
        rows = []
        for record in batch:
            contact = self.contacts.get(record.contact_id) if record.contact_id else None
            if record.activity == "F" or record.contact_id is None:
                self.report.skip_many("outgoing", "a forward to a URN: no contact here")
                continue
            if contact is None:
                self.report.skip_many("outgoing", "its contact is not in the source")
                continue
            case_id = self._id("case", record.case_id)
            reply_to = record.reply_to_id
            rows.append(
                {
                    "id": self._id("outgoing", record.id),
                    "org": self.org,
                    "contact_id": contact,
                    "case_id": case_id if case_id in self.case_ids else None,
                    "reply_to": None
                    if reply_to is None or reply_to in self.skipped_messages
                    else self._id("message", reply_to),
                    "partner_id": self.people.partner(record.partner_id),
                    "user_id": self.people.user(record.created_by_id),
                    "text": record.text,
                    "delivery": "sent",  # never sent again
                    "sent_on": record.created_on,
                    "created_at": record.created_on,
                }
            )
        self._insert(session, Outgoing, rows)
        self.report.counts["outgoing"]["created"] += len(rows)
        return len(rows)

    # --- case actions ---------------------------------------------------------------------------
    def _action_people(self, batch: list[cp.CaseAction]) -> None:
        for record in batch:
            self.people.user(record.created_by_id)
            if record.action in ("O", "A"):
                self.people.partner(record.assignee_id)
                self.people.user(record.user_assignee_id)

    def _actions(self, session: Session, batch: list[cp.CaseAction]) -> int:
        opened = {self._id("case", r.case_id) for r in batch if r.action == "O"} & self.case_ids
        assignees = {
            case_id: (partner_id, user_id)
            for case_id, partner_id, user_id in session.execute(
                select(Case.id, Case.partner_id, Case.user_id).where(Case.id.in_(opened))
            )
        }
        case_labels: dict[str, list[str]] = {case_id: [] for case_id in opened}
        for case_id, label_id in session.execute(
            select(CaseLabel.case_id, CaseLabel.label_id).where(CaseLabel.case_id.in_(opened))
        ):
            case_labels[case_id].append(label_id)
        rows, openers, closes, reopens = [], {}, Counter(), {}
        for record in batch:
            case_id = self._id("case", record.case_id)
            kind = ACTION_KINDS.get(record.action)
            why = None
            if case_id not in self.case_ids:
                why = "its case was not imported"
            elif kind is None:
                why = f"an unknown action {record.action!r}"
            label = self.labels.get(record.label_id) if record.label_id is not None else None
            if why is None and kind == "labels" and label is None:
                why = "a label not imported (deleted)"
            if why is not None:
                self.report.skip_many("actions", why)
                continue
            user = self.people.user(record.created_by_id)
            data: dict[str, Any] = {}
            note = record.note
            if kind in ("open", "reassign"):
                partner, assigned = assignees.get(case_id, (None, None))
                if record.assignee_id is not None:
                    partner = self.people.partner(record.assignee_id)
                if record.user_assignee_id is not None or kind == "reassign":
                    assigned = self.people.user(record.user_assignee_id)
                data = {
                    "partner": self._ref(partner),
                    "user": self._ref(assigned),
                    "self_assigned": self.people.user_partner.get(user) == partner,
                }
            if kind == "open":
                # The labels the case had when opened are not kept by CasePro: its labels now
                # stand in for them (they are the first message's, plus and minus L/U actions).
                data["labels"] = sorted(case_labels.get(case_id, []))
                openers[case_id] = user
            elif kind == "summary":
                note = None  # CasePro keeps neither the old summary nor the new
            elif kind == "labels":
                added = record.action == "L"
                data = {"added": [label] if added else [], "removed": [] if added else [label]}
            elif kind == "close":
                closes[case_id] += 1
            elif kind == "reopen":
                reopens[case_id] = max(reopens.get(case_id, record.created_on), record.created_on)
            rows.append(
                {
                    "id": self._id("action", record.id),
                    "case_id": case_id,
                    "kind": kind,
                    "user_id": user,
                    "note": note,
                    "data": data,
                    "created_at": record.created_on,
                }
            )
        self._insert(session, CaseAction, rows)
        self._case_updates(session, openers, closes, reopens)
        self.report.counts["actions"]["created"] += len(rows)
        return len(rows)

    def _ref(self, person_id: str | None) -> dict[str, str] | None:
        if person_id is None:
            return None
        return {"id": person_id, "name": self.people.names.get(person_id, "")}

    def _case_updates(self, session, openers, closes, reopens) -> None:
        """What the case row says of its actions: who opened it, how often it was closed, when
        it was last reopened."""
        conn = session.connection()
        table = Case.__table__
        if openers:
            conn.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(opened_by=bindparam("b_by")),
                [{"b_id": k, "b_by": v} for k, v in openers.items()],
            )
        if closes:
            conn.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values(close_count=table.c.close_count + bindparam("b_n")),
                [{"b_id": k, "b_n": n} for k, n in closes.items()],
            )
        if reopens:
            at = bindparam("b_at", type_=table.c.reopened_on.type)
            later = case(
                (table.c.reopened_on.is_(None), at),
                (table.c.reopened_on < at, at),
                else_=table.c.reopened_on,
            )
            conn.execute(
                update(table).where(table.c.id == bindparam("b_id")).values(reopened_on=later),
                [{"b_id": k, "b_at": v} for k, v in reopens.items()],
            )

    # --- afterwards -----------------------------------------------------------------------------
    def _rebuild(self) -> None:
        """Statistics and folder counts from the history now here (once after what a run
        imported, also when the run before stopped before it)."""
        with self.store.db.session() as session:
            link = session.get(ImportLink, (self.org, self.name, CURSOR, REBUILT))
        if link is not None and link.target_id == "1":
            return
        started = time.perf_counter()
        facts = statistics.rebuild(self.store, self.org).get(self.org, 0)
        self.report.timings["statistics"] = time.perf_counter() - started
        self.imp.progress(
            f"statistics: {facts:,} facts in {self.report.timings['statistics']:.1f} s"
        )
        started = time.perf_counter()
        rebuild_message_counts(self.store, self.org)
        self.report.timings["folder counts"] = time.perf_counter() - started
        with self.store.db.session() as session, session.begin():
            self._set_cursor(session, REBUILT, "1")


def _batches(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__: Sequence[str] = ("History", "derived_id", "NAMESPACE", "BATCH")

"""Importing an org from CasePro: its configuration, through the service's own commands.

``import_casepro`` reads a ``CaseproSource`` (services/cases/casepro/: CasePro's database,
read-only, or its tickets_migrate files) and brings over the org's settings, labels with their
rules, partners, users and ready-made answers. Each thing goes through the same command the
partner API calls (``create_label``, ``create_partner``, ``create_user``, ``update_org``...),
with its values loaded by the API's own schemas: what the API would refuse, the import skips
and reports, and every change emits its events as usual (the labeler hears of the labels,
flowbridge of the org's settings).

Safe to run again: each thing imported gets an ``ImportLink`` (its kind and id in the source,
the row it became), and a run skips what has one, so a second run changes nothing and a run
cut short resumes. A thing created just before a crash, without its link yet, is found by its
name (label, partner), email (user) or question (answer) and adopted. An org that already holds
data that no import of this source wrote is refused unless ``merge`` is given.

``dry_run`` reads and decides everything but writes nothing: the report then says what a run
would create. Users come without a password (CasePro's are not carried over): an administrator
sends each an invitation link from the Users page.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, ValidationError
from sqlalchemy import func, select

from services.cases import schemas
from services.cases.answers_domain import engine_language
from services.cases.casepro import records as cp
from services.cases.casepro.rules import group_uuids, translate_rule
from services.cases.domain import ADMINISTRATOR, Actor, Conflict, Invalid
from services.cases.handlers.answers import create_answer
from services.cases.handlers.labels import create_label
from services.cases.handlers.org import update_org
from services.cases.handlers.people import create_partner, create_user, update_user
from services.cases.models import Answer, ImportLink, Label, Org, Partner, User
from shared.db import new_id
from shared.orgs import ORG_KEY_RULE, is_org_key
from shared.uow import ServiceStore

log = logging.getLogger(__name__)

# The order things are imported in: a partner names labels, a user a partner, an answer labels.
CONFIG_KINDS = ("org", "labels", "partners", "users", "answers")
# The history, after the configuration (import_history.py): what refers to what comes later.
HISTORY_KINDS = ("contacts", "cases", "messages", "outgoing", "actions")


@dataclass
class ImportReport:
    """What a run did (or, dry, would do): per kind, how many were created, were there already
    (imported before, or adopted) and were skipped; and each skip with its reason."""

    source: str
    org: str
    dry_run: bool
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # kind, what, why
    # The history's skips, counted per reason rather than listed one by one.
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, why) -> n
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds

    def skip(self, kind: str, what: str, why: str) -> None:
        """``kind`` is a kind of CONFIG_KINDS (counted), or a part of one (``label rules``)."""
        if kind in CONFIG_KINDS:
            self.counts[kind]["skipped"] += 1
        self.skipped.append((kind, what, why))

    def skip_many(self, kind: str, why: str, n: int = 1) -> None:
        """History rows (or parts of them: ``case labels``) left out, counted per reason."""
        if kind in HISTORY_KINDS:
            self.counts[kind]["skipped"] += n
        self.reasons[(kind, why)] += n

    def lines(self) -> list[str]:
        verb = "would create" if self.dry_run else "created"
        lines = [f"{'Dry run: ' if self.dry_run else ''}{self.source} into org {self.org}"]
        for kind in self.counts:
            n = self.counts[kind]
            lines.append(
                f"  {kind:<10} {verb} {n['created']}, already there {n['existing']}, "
                f"skipped {n['skipped']}"
            )
        if self.skipped:
            lines.append("Skipped:")
            lines.extend(f"  {kind}: {what}: {why}" for kind, what, why in self.skipped)
        if self.reasons:
            lines.append("Skipped from the history (per reason):")
            lines.extend(f"  {kind}: {n} {why}" for (kind, why), n in self.reasons.items())
        if self.timings:
            lines.append("Timings:")
            lines.extend(f"  {phase:<20} {took:.1f} s" for phase, took in self.timings.items())
        if self.notes:
            lines.append("Notes:")
            lines.extend(f"  {note}" for note in self.notes)
        return lines


def import_casepro(
    store: ServiceStore,
    source: cp.CaseproSource,
    org: str,
    *,
    merge: bool = False,
    dry_run: bool = False,
    history: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> ImportReport:
    """Import ``source``'s org into the org ``org`` (created if new); see the module's text.
    ``history``: then also its contacts, messages, replies and cases (import_history.py)."""
    if not is_org_key(org):
        raise Invalid({"into": [ORG_KEY_RULE]})
    return _Import(
        store, source, org, merge=merge, dry_run=dry_run, history=history, progress=progress
    ).run()


def source_name(source: cp.CaseproSource) -> str:
    """How links name the source: CasePro's org id, or for the files (no ids) the org's name."""
    if source.org.id is not None:
        return f"casepro:{source.org.id}"
    return f"casepro-files:{source.org.name}"[:64]


class _Import:
    def __init__(
        self,
        store: ServiceStore,
        source: cp.CaseproSource,
        org: str,
        *,
        merge: bool,
        dry_run: bool,
        progress: Callable[[str], None],
        history: bool = False,
    ) -> None:
        self.store, self.source, self.org = store, source, org
        self.merge, self.dry_run, self.progress = merge, dry_run, progress
        self.name = source_name(source)
        self.report = ImportReport(self.name, org, dry_run)
        self.report.notes.extend(source.notes())
        # The importer acts as an administrator of the org that no user row stands for.
        self.actor = Actor(org, "casepro-import", "CasePro import", ADMINISTRATOR, None)
        # By database the source's own ids; from the files (which number things per reading)
        # the names that stay the same from one reading to the next.
        self.by_id = source.org.id is not None
        self.links: dict[str, dict[str, str | None]] = {}
        self.groups = group_uuids(source.groups())
        self.history = history

    def run(self) -> ImportReport:
        self._check_target()
        self._org()
        self._labels()
        self._partners()
        self._users()
        self._answers()
        if self.history:
            from services.cases.handlers.import_history import History

            History(self).run()
        return self.report

    # --- links ----------------------------------------------------------------------------------
    def _load_links(self, kind: str) -> dict[str, str | None]:
        if kind not in self.links:
            with self.store.db.session() as session:
                rows = session.execute(
                    select(ImportLink.source_id, ImportLink.target_id).where(
                        ImportLink.org == self.org,
                        ImportLink.source == self.name,
                        ImportLink.kind == kind,
                    )
                )
                self.links[kind] = dict(rows.all())
        return self.links[kind]

    def _link(self, kind: str, key: str, target_id: str | None) -> None:
        self._load_links(kind)[key] = target_id
        if self.dry_run:
            return
        with self.store.db.session() as session, session.begin():
            session.merge(
                ImportLink(
                    org=self.org, source=self.name, kind=kind, source_id=key, target_id=target_id
                )
            )

    def _target(self, kind: str, key: str | int | None) -> str | None:
        return None if key is None else self._load_links(kind).get(str(key))

    def _imported(self, kind: str, key: str) -> bool:
        """Whether an earlier run imported it (counted as already there)."""
        if self._target(kind, key) is None:
            return False
        self.report.counts[kind]["existing"] += 1
        return True

    def _key(self, record: Any, natural: str) -> str:
        return str(record.id) if self.by_id else natural

    # --- the target org -------------------------------------------------------------------------
    def _check_target(self) -> None:
        with self.store.db.session() as session:
            exists = session.get(Org, self.org) is not None
            holds = exists and any(
                session.scalar(select(func.count()).select_from(model).where(model.org == self.org))
                for model in (Label, Partner, User, Answer)
            )
        if holds and not self._load_links("org") and not self.merge:
            raise Conflict(
                "ORG_HAS_DATA",
                f"Org {self.org} already holds labels, partners, users or answers that no import "
                f"of {self.name} made; give --merge to import into it anyway.",
            )

    def _org(self) -> None:
        org, report = self.source.org, self.report
        settings: dict[str, Any] = {"name": org.name[:128]}
        if org.timezone:
            settings["timezone"] = org.timezone
        if org.follow_up_flow is not None:
            settings["followup_flow"] = org.follow_up_flow.uuid
        suspend = []
        for group in self.source.groups():
            if not group.suspend_from or not group.is_active:
                continue
            if group.is_dynamic:
                report.skip("org", f"suspend group {group.name}", "a smart group: never removed")
            elif not group.uuid:
                report.skip("org", f"suspend group {group.name}", "no flow engine uuid")
            else:
                suspend.append(group.uuid)
        if suspend:
            settings["suspend_groups"] = suspend
        visible = [f for f in self.source.fields() if f.is_visible and f.is_active]
        if visible:
            settings["display_field"] = visible[0].key
            for other in visible[1:]:
                report.skip(
                    "org",
                    f"contact field {other.key}",
                    f"partners see one contact field here: {visible[0].key} was chosen",
                )
        partner_users = [u for u in self.source.users() if u.role != ADMINISTRATOR and u.is_active]
        if partner_users and all(u.must_use_faq for u in partner_users):
            settings["must_use_answers"] = True
        elif any(u.must_use_faq for u in partner_users):
            report.notes.append(
                "Some partner users had to reply from an FAQ; here that is an org-wide setting "
                "(must use answers), left off as not all of them had it."
            )
        if org.banner:
            report.notes.append("The org's banner text has no place here and was not imported.")
        values = self._load("org", org.name, schemas.OrgSettingsSchema(), settings)
        if values is None:
            values = {"name": settings["name"]}  # the rest is reported; the org still exists
        if self._target("org", "org") is not None:
            report.counts["org"]["existing"] += 1
            return
        report.counts["org"]["created"] += 1
        if not self.dry_run:
            update_org(self.store, self.actor, values)
        self._link("org", "org", self.org)
        self.progress(f"org settings: {', '.join(sorted(values))}")

    def _load(self, kind: str, what: str, schema: Schema, values: dict[str, Any]) -> dict | None:
        """``values`` as the API would load them; None (and reported) when it would refuse."""
        try:
            return schema.load(values)
        except ValidationError as exc:
            self.report.skip(kind, what, _errors(exc.messages))
            return None

    # --- labels ---------------------------------------------------------------------------------
    def _labels(self) -> None:
        existing = self._names(Label)
        for label in self.source.labels():
            key = self._key(label, label.name)
            if self._imported("labels", key):
                continue
            if not label.is_active:
                self.report.skip("labels", label.name, "deleted in CasePro")
                continue
            translated = translate_rule(label.rule_tests, self.groups)
            for reason in translated.reasons:
                self.report.skip("label rules", label.name, reason)
            values = {
                "name": label.name,
                "description": label.description or "",
                "synced": label.is_synced,
                "rule": translated.tests or [],
            }
            loaded = self._try_load(schemas.LabelSchema(), values)
            if isinstance(loaded, str) and "rule" in loaded:
                self.report.skip("label rules", label.name, f"imported without its rule: {loaded}")
                loaded = self._try_load(schemas.LabelSchema(), values | {"rule": []})
            if isinstance(loaded, str):
                self.report.skip("labels", label.name, loaded)
                continue
            self._create(
                "labels",
                key,
                label.name,
                existing,
                lambda v=loaded: create_label(self.store, self.actor, v).id,
            )
        self.progress(_progress_line("labels", self.report))

    # --- partners -------------------------------------------------------------------------------
    def _partners(self) -> None:
        existing = self._names(Partner)
        for partner in self.source.partners():
            key = self._key(partner, partner.name)
            if self._imported("partners", key):
                continue
            if not partner.is_active:
                self.report.skip("partners", partner.name, "deleted in CasePro")
                continue
            labels = [self._target("labels", self._label_key(i)) for i in partner.label_ids]
            if partner.is_restricted and None in labels:
                self.report.notes.append(
                    f"Partner {partner.name} is restricted; labels of it that were not "
                    "imported are left out of what it sees."
                )
            values = {
                "name": partner.name,
                "description": partner.description or "",
                "restricted": partner.is_restricted,
                "labels": [label for label in labels if label is not None],
            }
            loaded = self._load("partners", partner.name, schemas.PartnerSchema(), values)
            if loaded is None:
                continue
            self._create(
                "partners",
                key,
                partner.name,
                existing,
                lambda v=loaded: create_partner(self.store, self.actor, v).id,
            )
        self.progress(_progress_line("partners", self.report))

    def _label_key(self, label_id: int) -> str:
        if self.by_id:
            return str(label_id)
        return next((label.name for label in self.source.labels() if label.id == label_id), "")

    # --- users ----------------------------------------------------------------------------------
    def _users(self) -> None:
        with self.store.db.session() as session:
            existing = dict(
                session.execute(select(User.email, User.id).where(User.org == self.org)).all()
            )
        partners = {p.id: p for p in self.source.partners()}
        for user in self.source.users():
            who = user.email or f"user {user.id} ({user.full_name})"
            key = self._key(user, (user.email or "").lower())
            if self._imported("users", key):
                continue
            if not user.email:
                self.report.skip("users", who, "no email: could neither sign in nor be invited")
                continue
            partner = None
            if user.role != ADMINISTRATOR:
                source_partner = partners.get(user.partner_id) if user.partner_id else None
                if source_partner is not None:
                    partner = self._target(
                        "partners", self._key(source_partner, source_partner.name)
                    )
                if partner is None:
                    self.report.skip("users", who, f"a {user.role} without an imported partner")
                    continue
            values = {
                "name": (user.full_name or user.email.split("@")[0])[:128],
                "email": user.email,
                "role": user.role,
                "partner": partner,
            }
            loaded = self._load("users", who, schemas.UserSchema(), values)
            if loaded is None:
                continue

            def create(v: dict[str, Any] = loaded, active: bool = user.is_active) -> str:
                made = create_user(self.store, self.actor, v)
                if not active:
                    update_user(self.store, self.actor, made.id, {"active": False})
                return made.id

            self._create("users", key, user.email.lower(), existing, create)
        self.progress(_progress_line("users", self.report))

    # --- ready-made answers ---------------------------------------------------------------------
    def _answers(self) -> None:
        faqs = self.source.faqs()
        translations: dict[int, list[cp.Faq]] = defaultdict(list)
        for faq in faqs:
            if faq.parent_id is not None:
                translations[faq.parent_id].append(faq)
        with self.store.db.session() as session:
            existing = {
                (question, language): answer_id
                for answer_id, question, language in session.execute(
                    select(Answer.id, Answer.question, Answer.language).where(
                        Answer.org == self.org
                    )
                )
            }
        for faq in faqs:
            if faq.parent_id is not None:
                continue
            key = self._key(faq, f"{faq.question}|{faq.language}")
            if self._imported("answers", key):
                continue
            language = engine_language(faq.language)
            values = {
                "question": faq.question,
                "answer": faq.answer,
                "language": language,
                "labels": [
                    target
                    for target in (
                        self._target("labels", self._label_key(i)) for i in faq.label_ids
                    )
                    if target is not None
                ],
                "translations": self._translations(faq, language, translations[faq.id]),
            }
            loaded = self._load("answers", faq.question, schemas.AnswerSchema(), values)
            if loaded is None:
                continue
            self._create(
                "answers",
                key,
                (loaded["question"], loaded["language"]),
                existing,
                lambda v=loaded: create_answer(self.store, self.actor, v).id,
            )
        self.progress(_progress_line("answers", self.report))

    def _translations(self, faq: cp.Faq, language: str | None, children: list[cp.Faq]) -> list:
        kept: dict[str, dict[str, str]] = {}
        for child in children:
            code = engine_language(child.language)
            if code is None or code == language or code in kept:
                why = "no language" if code is None else f"a second text in {code}"
                self.report.skip("answers", f"translation of {faq.question}", why)
                continue
            kept[code] = {"language": code, "question": child.question, "answer": child.answer}
        return list(kept.values())

    # --- creating -------------------------------------------------------------------------------
    def _names(self, model: type) -> dict[str, str]:
        with self.store.db.session() as session:
            rows = session.execute(select(model.name, model.id).where(model.org == self.org))
            return dict(rows.all())

    def _try_load(self, schema: Schema, values: dict[str, Any]) -> dict[str, Any] | str:
        try:
            return schema.load(values)
        except ValidationError as exc:
            return _errors(exc.messages)

    def _create(
        self,
        kind: str,
        key: str,
        natural: Any,
        existing: dict[Any, str],
        create: Callable[[], str],
    ) -> None:
        """Adopt the thing already there under its natural key, or create it; link it."""
        counts = self.report.counts[kind]
        if natural in existing:
            counts["existing"] += 1
            self._link(kind, key, existing[natural])
            return
        counts["created"] += 1
        if self.dry_run:
            self._load_links(kind)[key] = new_id()  # what later kinds will refer to
            return
        try:
            target = create()
        except (Invalid, Conflict) as exc:
            counts["created"] -= 1
            self.report.skip(kind, str(natural), str(exc))
            return
        existing[natural] = target
        self._link(kind, key, target)


def _progress_line(kind: str, report: ImportReport) -> str:
    n = report.counts[kind]
    return f"{kind}: {n['created']} new, {n['existing']} already there, {n['skipped']} skipped"


def _errors(messages: Any) -> str:
    """A schema's error messages in one line: ``rule: ...; name: ...``."""
    if isinstance(messages, dict):
        return "; ".join(f"{key}: {_errors(value)}" for key, value in messages.items())
    if isinstance(messages, list):
        return " ".join(_errors(m) for m in messages)
    return str(messages)

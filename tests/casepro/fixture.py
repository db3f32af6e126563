"""A deterministic CasePro org (and a second one that an import of the first must not read),
written into a database that has tests/casepro/schema.sql, with COPY.

``fill(conn, Size())`` writes the tests' size: 1,000 messages and 50 cases in the main org;
``Size(messages=1_000_000, cases=100_000)`` is a benchmark's. Everything comes from one seeded
``random.Random``, so the same size gives the same rows. It returns a ``Manifest``: the ids and
counts the tests check the reader against, known by construction.

The two orgs' ids interleave in every table (the main org takes the numbers that are not
multiples of 7, the other org the multiples), as rows of two orgs do in a real database: a query
that forgot its org filter reads rows of the other org.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.casepro import templates as t

T0 = datetime(2023, 3, 1, 9, 0, tzinfo=UTC)
SPAN = timedelta(days=300)
KINDS = ("groups", "fields", "users", "partners", "labels", "faqs")
KINDS += ("contacts", "messages", "outgoing", "cases", "actions")


@dataclass(frozen=True)
class Size:
    messages: int = 1000
    cases: int = 50
    contacts: int = 0  # 0: enough for the cases and about 8 messages each
    seed: int = 16

    def contact_count(self) -> int:
        return self.contacts or max(150, self.cases + self.cases // 4 + 20, self.messages // 8)


@dataclass
class Manifest:
    """One org as written: its ids by the templates' keys, and its rows per kind."""

    org_id: int = 0
    name: str = ""
    subdomain: str = ""
    counts: Counter = field(default_factory=Counter)
    users: dict[str, int] = field(default_factory=dict)
    partners: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    special: dict[str, Any] = field(default_factory=dict)  # ids and indexes met by name
    action_codes: Counter = field(default_factory=Counter)
    activities: Counter = field(default_factory=Counter)
    reopened: set[int] = field(default_factory=set)
    message_types: Counter = field(default_factory=Counter)
    other: Manifest | None = None  # the second org, on the main org's manifest
    hstore: bool = True


class Ids:
    """Row ids of one org: slot 0 takes the numbers that are not multiples of 7, slot 1 the
    multiples."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.counters: Counter = Counter({"auth_user": 2 if slot == 0 else 0})  # root, root2

    def __call__(self, table: str) -> int:
        self.counters[table] += 1
        n = self.counters[table]
        return 7 * n if self.slot else n + (n - 1) // 6


def copy(conn: psycopg.Connection, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> int:
    written = 0
    with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as out:
        for row in rows:
            out.write_row(row)
            written += 1
    return written


def _hstore(fields: dict[str, str | None]) -> str:
    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return ", ".join(f"{quote(k)}=>{'NULL' if v is None else quote(v)}" for k, v in fields.items())


class OrgBuilder:
    def __init__(self, conn, rng, slot, name, subdomain, domain, size, hstore) -> None:
        self.conn, self.rng, self.size, self.hstore = conn, rng, size, hstore
        self.ids = Ids(slot)
        self.domain = domain
        self.slot = slot
        self.m = Manifest(name=name, subdomain=subdomain, hstore=hstore)
        self.step = SPAN / size.messages

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def build(self) -> Manifest:
        self.org()
        self.people()
        self.catalogue()
        self.contacts()
        self.plan_cases()
        self.messages()
        self.cases()
        return self.m

    def org(self) -> None:
        m = self.m
        m.org_id = self.ids("orgs_org")
        common: dict[str, Any] = {}
        if self.slot == 0:
            flow = {"uuid": self.uuid(), "name": "Acompanhamento"}
            common = {
                "follow_up_flow": json.dumps(flow),  # a JSON string inside the JSON
                "banner_text": "Atenção: atendimento reduzido no feriado.",
                "suspend_groups": [self.uuid()],  # a stale copy, migrated out long ago
            }
            m.special["follow_up_flow_uuid"] = flow["uuid"]
        config = Jsonb({"common": common, "rapidpro": {}})
        row = (m.org_id, True, T0, T0, m.name, "pt", m.subdomain, None, "America/Sao_Paulo")
        copy(
            self.conn,
            "orgs_org",
            "id, is_active, created_on, modified_on, name, language, subdomain, domain, "
            "timezone, config, logo, created_by_id, modified_by_id",
            [(*row, config, None, 1, 1)],
        )
        copy(
            self.conn,
            "orgs_orgbackend",
            "id, is_active, created_on, modified_on, slug, api_token, host, backend_type, org_id, "
            "created_by_id, modified_by_id",
            [(m.org_id, True, T0, T0, "rapidpro", "secret-token", "https://rapidpro.example/",
              "casepro.backend.rapidpro.RapidProBackend", m.org_id, 1, 1)],
        )  # fmt: skip

    def people(self) -> None:
        m, ids = self.m, self.ids
        users, profiles, roles, members = [], [], defaultdict(list), []
        for p in t.PARTNERS:
            m.partners[p.key] = ids("cases_partner")
        for u in t.USERS:
            user_id = m.users[u.key] = ids("auth_user")
            email = f"{u.key}@{self.domain}" if u.has_email else ""
            username = email or f"{u.key}.{self.m.subdomain}"
            first, last = t.NO_PROFILE_NAME if u.full_name is None else ("", "")
            users.append((user_id, "pbkdf2_sha256$x", None, False, username, first, last, email,
                          False, u.active, T0))  # fmt: skip
            if u.full_name is not None:
                profiles.append((ids("profiles_profile"), u.full_name, False, u.must_use_faq, True,
                                 user_id))  # fmt: skip
            for code in u.roles:
                roles[code].append(user_id)
            if u.partner:
                members.append((ids("cases_partner_users"), m.partners[u.partner], user_id))
        m.counts["users"] = sum(1 for u in t.USERS if u.roles)
        copy(
            self.conn,
            "auth_user",
            "id, password, last_login, is_superuser, username, first_name, last_name, email, "
            "is_staff, is_active, date_joined",
            users,
        )
        copy(
            self.conn,
            "profiles_profile",
            "id, full_name, change_password, must_use_faq, is_email_valid, user_id",
            profiles,
        )
        for code, table in (("A", "administrators"), ("M", "editors"), ("Y", "viewers")):
            rows = [(ids(table), m.org_id, user_id) for user_id in roles[code]]
            copy(self.conn, f"orgs_org_{table}", "id, org_id, user_id", rows)
        partners = [
            (m.partners[p.key], m.org_id, p.name, p.description,
             m.users["carla"] if p.key == "norte" else None, p.restricted, None, p.active)
            for p in t.PARTNERS
        ]  # fmt: skip
        copy(
            self.conn,
            "cases_partner",
            "id, org_id, name, description, primary_contact_id, is_restricted, logo, is_active",
            partners,
        )
        copy(self.conn, "cases_partner_users", "id, partner_id, user_id", members)
        m.counts["partners"] = len(partners)

    def catalogue(self) -> None:
        """Groups, fields, labels with their rules and watchers, FAQs."""
        m, ids = self.m, self.ids
        groups = []
        for g in t.GROUPS:
            group_id = m.groups[g.key] = ids("contacts_group")
            groups.append((group_id, m.org_id, self.uuid() if g.synced else None, g.name, 0,
                           g.dynamic, T0, g.active, g.visible, g.suspend_from))  # fmt: skip
        copy(
            self.conn,
            "contacts_group",
            "id, org_id, uuid, name, count, is_dynamic, created_on, is_active, is_visible, "
            "suspend_from",
            groups,
        )
        fields = [(ids("contacts_field"), m.org_id, *f) for f in t.FIELDS]
        copy(
            self.conn,
            "contacts_field",
            "id, org_id, key, label, value_type, is_active, is_visible",
            fields,
        )
        rules, labels, watchers = [], [], []
        for label in t.LABELS:
            label_id = m.labels[label.name] = ids("msgs_label")
            rule_id = None
            if label.tests is not None and label.active:  # a deleted label's rule is deleted
                rule_id = ids("rules_rule")
                tests = [self._resolve(test) for test in label.tests]
                # CasePro's json.dumps: ASCII only, so NFKD marks come out as \u escapes
                actions = json.dumps([{"type": "label", "label": label_id}])
                rules.append((rule_id, m.org_id, json.dumps(tests), actions))
            uuid_ = self.uuid() if label.synced else None
            labels.append((label_id, m.org_id, uuid_, label.name, label.description,
                           label.synced, rule_id, label.active, T0))  # fmt: skip
            for key in label.watchers:
                watchers.append((ids("msgs_label_watchers"), label_id, m.users[key]))
        copy(self.conn, "rules_rule", "id, org_id, tests, actions", rules)
        copy(
            self.conn,
            "msgs_label",
            "id, org_id, uuid, name, description, is_synced, rule_id, is_active, created_on",
            labels,
        )
        copy(self.conn, "msgs_label_watchers", "id, label_id, user_id", watchers)
        partner_labels = [
            (ids("cases_partner_labels"), m.partners[p.key], m.labels[name])
            for p in t.PARTNERS
            for name in p.labels
        ]
        copy(self.conn, "cases_partner_labels", "id, partner_id, label_id", partner_labels)

        faqs, faq_labels = [], []
        for question, answer, language, label_names, translations in t.FAQS:
            parent = ids("msgs_faq")
            faqs.append((parent, m.org_id, question, answer, language, None))
            for name in label_names:
                faq_labels.append((ids("msgs_faq_labels"), parent, m.labels[name]))
            for lang, q, a in translations:
                faqs.append((ids("msgs_faq"), m.org_id, q, a, lang, parent))
        copy(self.conn, "msgs_faq", "id, org_id, question, answer, language, parent_id", faqs)
        copy(self.conn, "msgs_faq_labels", "id, faq_id, label_id", faq_labels)
        m.counts.update(groups=len(groups), fields=len(fields), labels=len(labels), faqs=len(faqs))

    def _resolve(self, test: dict[str, Any]) -> dict[str, Any]:
        if test["type"] != "groups":
            return test
        return {**test, "groups": [self.m.groups[key] for key in test["groups"]]}

    def contacts(self) -> None:
        m, rng, ids = self.m, self.rng, self.ids
        self.contact_ids: list[int] = []
        members = []
        active_groups = [m.groups[g.key] for g in t.GROUPS if g.active]

        def rows():
            for index in range(self.size.contact_count()):
                contact_id = ids("contacts_contact")
                self.contact_ids.append(contact_id)
                fields: dict[str, str | None] | None = {
                    "cidade": rng.choice(t.CITIES),
                    "idade": str(rng.randint(12, 29)),
                }
                if rng.random() < 0.7:
                    fields["genero"] = rng.choice(t.GENDERS)
                if index == 2:
                    fields["cidade"] = "Rio  de  Janeiro"  # two spaces each time
                    m.special["double_space_contact"] = contact_id
                elif index == 3:
                    fields = None
                elif index == 4:
                    fields["bairro"] = None  # a key without a value
                language = rng.choice(("por",) * 7 + ("spa", "eng", None))
                name = f"{rng.choice(t.FIRST_NAMES)} {rng.choice(t.LAST_NAMES)}"
                urns = [f"tel:+5521{rng.randrange(10**8, 10**9)}"]
                if rng.random() < 0.3:
                    urns.append(f"whatsapp:5521{rng.randrange(10**8, 10**9)}")
                stub = index == 8
                if stub:
                    name, urns, fields = None, [], None
                blocked = index == 5 or (index > 10 and rng.random() < 0.01)
                stopped = index == 6 or (index > 10 and rng.random() < 0.01)
                for group_id in rng.sample(active_groups, rng.randint(0, 3)):
                    members.append((ids("contacts_contact_groups"), contact_id, group_id))
                if fields is None:
                    stored = None
                else:
                    stored = _hstore(fields) if self.hstore else json.dumps(fields)
                yield (contact_id, m.org_id, self.uuid(), name, stored, language, urns,
                       index != 7, blocked, stopped, stub, T0)  # fmt: skip

        m.counts["contacts"] = copy(
            self.conn,
            "contacts_contact",
            "id, org_id, uuid, name, fields, language, urns, is_active, is_blocked, is_stopped, "
            "is_stub, created_on",
            rows(),
        )
        m.special["contact_without_fields"] = self.contact_ids[3]
        copy(self.conn, "contacts_contact_groups", "id, contact_id, group_id", members)

    def plan_cases(self) -> None:
        """Which message opens each case: case k opens in the k-th stretch of the messages, for
        the k-th contact from the 11th on (one open case per contact, as CasePro allows)."""
        n, cases = self.size.messages, self.size.cases
        stride = n // cases
        assert stride >= 4, "at least 4 messages per case"
        self.case_starts: dict[int, int] = {}  # message index -> case number
        self.case_ids = [self.ids("cases_case") for _ in range(cases)]
        for k in range(cases):
            self.case_starts[k * stride + self.rng.randrange(max(1, stride // 3))] = k
        self.case_contact = [10 + k for k in range(cases)]
        self.case_info: list[dict[str, Any]] = [{} for _ in range(cases)]
        self.no_message_case = 1 if cases > 1 else -1

    def messages(self) -> None:
        m, rng, ids, size = self.m, self.rng, self.ids, self.size
        label_pool = [m.labels[label.name] for label in t.LABELS if label.active]
        deleted = m.labels[t.DELETED_LABEL]
        backend_base = 1000 if self.slot == 0 else 500_000_000
        open_case: dict[int, tuple[int, datetime, datetime | None]] = {}  # contact -> case
        self.labelled: list[tuple[Any, ...]] = []
        self.message_labels: dict[int, list[int]] = {}  # of the cases' first messages
        self.bulk_targets: list[tuple[int, int, datetime]] = []
        forced: dict[int, int] = {}  # message index -> contact index

        def rows():
            for i in range(size.messages):
                message_id = ids("msgs_message")
                created = T0 + self.step * i + timedelta(seconds=rng.randrange(60))
                if i % 3:
                    created = created.replace(microsecond=rng.randrange(1, 10**6))
                k = self.case_starts.get(i)
                contact_index = forced.pop(i, None)
                if k is not None and k != self.no_message_case:
                    contact_index = self.case_contact[k]
                if contact_index is None:
                    contact_index = rng.randrange(len(self.contact_ids))
                contact_id = self.contact_ids[contact_index]
                if k is not None:
                    self._open(k, i, message_id, created, open_case, forced)
                case_id = None
                if contact_id in open_case:
                    case_id, since, until = open_case[contact_id]
                    if created < since or (until is not None and created > until):
                        case_id = None
                kind = "F" if (i == 5 or rng.random() < 0.1) else "I"
                flagged = i == 1 or rng.random() < 0.05
                archived = i == 2 or rng.random() < 0.1
                active = not (i == 3 or rng.random() < 0.02)
                handled = not (i == 4 or rng.random() < 0.03)
                text = "" if i == 6 else " ".join(rng.choices(t.WORDS, k=rng.randint(1, 12)))
                labels: list[int] = []
                if i == 9:
                    labels = [m.labels["Saúde"], deleted]
                elif handled and rng.random() < 0.5:
                    labels = sorted(set(rng.sample(label_pool, rng.randint(1, 2))))
                for label_id in labels:
                    self.labelled.append((ids("msgs_message_labels"), message_id, label_id,
                                          archived, flagged, created))  # fmt: skip
                if k is not None:
                    self.message_labels[message_id] = labels
                elif case_id is None and rng.random() < 0.03:
                    self.bulk_targets.append((message_id, contact_id, created))
                m.message_types[kind] += 1
                yield (message_id, m.org_id, backend_base + 3 * i + rng.randrange(3), contact_id,
                       kind, text, flagged, archived, handled, active, bool(labels), created,
                       created, None, None, case_id)  # fmt: skip

        m.counts["messages"] = copy(
            self.conn,
            "msgs_message",
            "id, org_id, backend_id, contact_id, type, text, is_flagged, is_archived, is_handled, "
            "is_active, has_labels, created_on, modified_on, locked_on, locked_by_id, case_id",
            rows(),
        )
        copy(
            self.conn,
            "msgs_message_labels",
            "id, message_id, label_id, message_is_archived, message_is_flagged, message_created_on",
            self.labelled,
        )
        m.special["unhandled_message_index"] = 4
        m.special["deleted_label_message_index"] = 9

    def _open(self, k, index, message_id, created, open_case, forced) -> None:
        """Case k opens at message ``index``; its contact may write twice more while open."""
        rng, info = self.rng, self.case_info[k]
        contact_id = self.contact_ids[self.case_contact[k]]
        opened = created + timedelta(seconds=20)
        until = opened + self.step * rng.randint(3, 15)
        info["opened_on"] = opened
        info["closed_on"] = None if k % 5 == 4 else until
        info["active_until"] = until
        info["initial"] = None if k == self.no_message_case else message_id
        open_case[contact_id] = (self.case_ids[k], created, info["closed_on"])
        for later in (index + 1, index + 2):
            if rng.random() < 0.5:
                forced[later] = self.case_contact[k]

    def cases(self) -> None:
        m, rng, ids = self.m, self.rng, self.ids
        partner_users = defaultdict(list)
        for u in t.USERS:
            if u.partner and u.roles and u.has_email:
                partner_users[u.partner].append(m.users[u.key])
        managers = {u.partner: m.users[u.key] for u in t.USERS if u.partner and "M" in u.roles}
        active = ["norte", "acolher", "defensoria"]
        admin = m.users["ana"]
        cases, case_labels, watchers, actions, outgoing = [], [], [], [], []

        def act(case_id, code, by, when, assignee=None, user=None, label=None, note=None):
            actions.append((ids("cases_caseaction"), m.org_id, case_id, code, by, when, assignee,
                            user, label, note))  # fmt: skip
            m.action_codes[code] += 1

        def reply(activity, text, contact, reply_to, case_id, partner, by, when):
            outgoing.append((ids("msgs_outgoing"), m.org_id, partner and m.partners[partner],
                             activity, text, None if activity == "B" else rng.randrange(10**9),
                             rng.randrange(10**6) if activity == "B" else None, contact,
                             "tel:+5521999990000" if activity == "F" else None, reply_to, case_id,
                             by, when))  # fmt: skip
            m.activities[activity] += 1

        for k, case_id in enumerate(self.case_ids):
            info = self.case_info[k]
            if not info:  # its stretch had no message: cannot happen with stride >= 4
                continue
            partner = "antigo" if k == 3 else active[k % 3]
            pool = partner_users[partner]
            user = pool[k % len(pool)] if pool and (k == 3 or rng.random() < 0.6) else None
            opened, until = info["opened_on"], info["active_until"]
            length = until - opened
            moment = (opened + length * step / 12 for step in itertools.count())
            opener = admin if k % 2 else managers.get(partner, admin)
            act(case_id, "O", opener, next(moment), m.partners[partner], user)
            labels = set(self.message_labels.get(info["initial"], []))
            if k == 0:
                labels.add(m.labels[t.DELETED_LABEL])
            if k % 4 == 1:
                act(case_id, "S", opener, next(moment))
            if k % 3 == 0:
                act(case_id, "N", user or opener, next(moment), note="Contato pediu retorno.")
            if k % 6 == 1:
                partner = active[(k + 1) % 3]
                user = partner_users[partner][0] if k % 12 == 1 else None
                act(case_id, "A", admin, next(moment), m.partners[partner], user,
                    note="Transferido." if k % 12 == 1 else None)  # fmt: skip
            if k % 5 == 2:
                label_id = m.labels[t.LABELS[(k // 5) % 6].name]
                act(case_id, "L", user or opener, next(moment), label=label_id)
                labels.add(label_id)
                if k % 10 == 2:
                    act(case_id, "U", user or opener, next(moment), label=label_id)
                    labels.discard(label_id)
            contact_id = self.contact_ids[self.case_contact[k]]
            by = user or managers.get(partner) or admin
            replier_partner = None if by == admin else partner
            for _ in range(1 + (k % 2)):
                reply("C", "Olá, estamos aqui para ajudar.", contact_id, info["initial"], case_id,
                      replier_partner, by, next(moment))  # fmt: skip
            closed = info["closed_on"]
            end = closed or until
            if k % 7 == 2:  # closed, reopened, and closed again unless it stays open
                act(case_id, "C", by, end - length * 0.1, note="Resolvido.")
                act(case_id, "R", admin, end - length * 0.05, note="Voltou a escrever.")
                m.reopened.add(case_id)
            if closed is not None:
                act(case_id, "C", by, closed, note=None if k % 2 else "Encerrado.")
            cases.append((case_id, m.org_id, m.partners[partner], user, contact_id,
                          info["initial"], f"Caso {k + 1}: pedido de ajuda com saúde", opened,
                          closed))  # fmt: skip
            for label_id in sorted(labels):
                case_labels.append((ids("cases_case_labels"), case_id, label_id))
            for watcher in sorted({opener, *([m.users["carla"]] if k % 4 == 0 else [])}):
                watchers.append((ids("cases_case_watchers"), case_id, watcher))
        m.special["case_without_message"] = self.case_ids[self.no_message_case]
        m.special["case_of_inactive_partner"] = self.case_ids[3]
        m.special["case_with_deleted_label"] = self.case_ids[0]

        bulk_senders = [(admin, None), (m.users["carla"], "norte"), (m.users["gabi"], "defensoria")]
        for n, (message_id, contact_id, created) in enumerate(self.bulk_targets):
            by, partner = bulk_senders[n % 3]
            reply("B", "Obrigada pela mensagem!", contact_id, message_id, None, partner, by,
                  created + timedelta(hours=1))  # fmt: skip
        for message_id, _contact, created in self.bulk_targets[:2]:
            reply("F", "Encaminhado: pedido de ajuda", None, message_id, None, "norte",
                  m.users["carla"], created + timedelta(hours=2))  # fmt: skip

        m.counts["cases"] = copy(
            self.conn,
            "cases_case",
            "id, org_id, assignee_id, user_assignee_id, contact_id, initial_message_id, summary, "
            "opened_on, closed_on",
            cases,
        )
        copy(self.conn, "cases_case_labels", "id, case_id, label_id", case_labels)
        copy(self.conn, "cases_case_watchers", "id, case_id, user_id", watchers)
        m.counts["actions"] = copy(
            self.conn,
            "cases_caseaction",
            "id, org_id, case_id, action, created_by_id, created_on, assignee_id, "
            "user_assignee_id, label_id, note",
            actions,
        )
        m.counts["outgoing"] = copy(
            self.conn,
            "msgs_outgoing",
            "id, org_id, partner_id, activity, text, backend_id, backend_broadcast_id, "
            "contact_id, urn, reply_to_id, case_id, created_by_id, created_on",
            outgoing,
        )


def fill(conn: psycopg.Connection, size: Size, *, hstore: bool = True) -> Manifest:
    """Write both orgs (in the caller's transaction); the main org's manifest, with the other
    org's as ``other``. ``hstore``: whether contacts_contact.fields is an hstore (else jsonb)."""
    rng = random.Random(size.seed)
    copy(
        conn,
        "auth_user",
        "id, password, last_login, is_superuser, username, first_name, last_name, email, "
        "is_staff, is_active, date_joined",
        [
            (1, "!", None, True, "root", "", "", "root@casepro.example", True, True, T0),
            (2, "!", None, True, "root2", "", "", "", True, True, T0),
        ],
    )
    main = OrgBuilder(
        conn, rng, 0, "Linha Jovem Rio", "linhajovem", "linhajovem.org.br", size, hstore
    ).build()
    small = Size(messages=60, cases=4, contacts=30, seed=size.seed)
    main.other = OrgBuilder(
        conn, rng, 1, "Outra Org", "outra", "outra.example", small, hstore
    ).build()
    return main

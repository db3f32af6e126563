"""The folder counts kept as messages change (handlers/counts.py) against the pass over every
message they replaced, kept here as the oracle: after every step of a long random story told
through the service layer and the consumers, for an administrator, an unrestricted and a
restricted partner, on SQLite and on PostgreSQL; and the rebuild (command and migration)
against the rows kept."""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import and_, delete, exists, func, select

from services.cases import handlers
from services.cases.domain import Actor, CasesError, CountKey
from services.cases.handlers.access import message_visibility
from services.cases.handlers.counts import count_rows, counted_from_messages
from services.cases.models import MIGRATIONS, Message, MessageLabel, MessageSetCount, Outgoing
from services.cases.views import Counts
from services.cli import main
from shared.bus.dispatch import Outcome, dispatch_batch
from tests.cases_helpers import ORG, CasesWorld, at, message_labeled, message_received, new_uuid


@pytest.fixture(params=["sqlite", "postgresql"])
def any_world(request):
    """The cases service on SQLite, and on PostgreSQL where it is reachable."""
    settings = request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")
    world = CasesWorld(settings)
    yield world
    world.close()


# --- the oracle: the pass over every message that the counts replaced ---------------------------
def scanned_counts(store, actor: Actor, *, simulation: bool = False) -> Counts:
    with store.unit_of_work() as uow:
        session = uow.session
        base = [Message.org == actor.org, Message.received_at.is_not(None)]
        if not simulation:
            base.append(Message.simulation.is_(False))
        has_label = exists().where(MessageLabel.message_id == Message.id)
        inbox = Message.archived.is_(False)
        folders = {
            "inbox": and_(inbox, has_label) if actor.is_admin else inbox,
            "flagged": Message.flagged.is_(True),
            "archived": Message.archived.is_(True),
        }
        if actor.is_admin:
            folders["unlabelled"] = and_(inbox, ~has_label)
        row = session.execute(
            select(*(func.count().filter(cond).label(name) for name, cond in folders.items()))
            .select_from(Message)
            .where(*base, message_visibility(actor))
        ).one()
        counts = {name: getattr(row, name) or 0 for name in folders}
        sent = select(func.count()).select_from(Outgoing).where(Outgoing.org == actor.org)
        if not actor.is_admin:
            sent = sent.where(Outgoing.partner_id == actor.partner_id)
        counts["sent"] = session.scalar(sent) or 0
        per_label_query = (
            select(MessageLabel.label_id, func.count())
            .join(Message, Message.id == MessageLabel.message_id)
            .where(*base, Message.archived.is_(False))
            .group_by(MessageLabel.label_id)
        )
        if actor.restricted:
            per_label_query = per_label_query.where(MessageLabel.label_id.in_(actor.partner_labels))
        per_label = session.execute(per_label_query).all()
        labels = {row[0]: row[1] for row in per_label if actor.sees_label(row[0])}
        return Counts(counts, labels)


def kept_rows(store, org: str = ORG) -> dict[CountKey, int]:
    with store.unit_of_work() as uow:
        return dict(count_rows(uow.session, org))


def from_scratch(store, org: str = ORG) -> dict[CountKey, int]:
    with store.unit_of_work() as uow:
        return counted_from_messages(uow.session, org)


# --- the story ----------------------------------------------------------------------------------
@dataclass
class Story:
    world: CasesWorld
    rng: random.Random
    labels: list[str] = field(default_factory=list)
    contacts: list[str] = field(default_factory=lambda: [new_uuid() for _ in range(8)])
    received: list = field(default_factory=list)  # message.received events delivered
    pending: list = field(default_factory=list)  # received events whose labels came first
    cases: list[str] = field(default_factory=list)
    minute: int = 0

    def __post_init__(self) -> None:
        world = self.world
        self.labels = [world.label(f"story {n}") for n in range(4)]
        self.open_partner = world.partner("Open")
        self.closed_partner = world.partner(
            "Closed", restricted=True, labels=tuple(self.labels[:2])
        )
        self.people = {
            "admin": world.admin,
            "open": world.user(self.open_partner),
            "restricted": world.user(self.closed_partner),
        }

    def actors(self) -> dict[str, Actor]:
        return {
            name: handlers.authenticate(self.world.store, person.token)
            for name, person in self.people.items()
        }

    @property
    def admin(self) -> Actor:
        return handlers.authenticate(self.world.store, self.world.admin.token)

    def some_labels(self) -> list[str]:
        return self.rng.sample(self.labels, self.rng.choice((0, 1, 1, 2, 3)))

    def new_received(self):
        self.minute += 1
        return message_received(
            contact=self.rng.choice(self.contacts),
            received_at=at(self.minute),
            simulation=self.rng.random() < 0.15,
        )

    def some_messages(self, k: int = 1) -> list[str]:
        ids = [e.data["message_id"] for e in self.received]
        return self.rng.sample(ids, min(k, len(ids)))

    def deliver(self, *events) -> None:
        outcomes = dispatch_batch(self.world.subscriptions["messages"], [e.body() for e in events])
        assert outcomes == [Outcome.ACK] * len(events)

    # the steps
    def receive(self) -> None:
        event = self.new_received()
        if self.rng.random() < 0.5:  # in one batch with its labels
            self.deliver(event, message_labeled(event, self.some_labels()))
        else:
            self.deliver(event)
        self.received.append(event)

    def labels_before_received(self) -> None:
        event = self.new_received()
        self.deliver(message_labeled(event, self.some_labels()))
        self.pending.append(event)

    def received_late(self) -> None:
        if self.pending:
            event = self.pending.pop(self.rng.randrange(len(self.pending)))
            self.deliver(event)
            self.received.append(event)

    def relabelled(self) -> None:
        """The labeler's newer opinion, or an older one arriving late, or a redelivery."""
        if not self.received:
            return
        event = self.rng.choice(self.received)
        late = timedelta(minutes=self.rng.choice((-30, 30)))
        labelled = message_labeled(event, self.some_labels(), occurred_at=event.occurred_at + late)
        self.deliver(*self.rng.choice(([labelled], [labelled, event], [event])))

    def act(self) -> None:
        actor = self.rng.choice(list(self.actors().values()))
        action = self.rng.choice(("label", "unlabel", "flag", "unflag", "archive", "restore"))
        label = self.rng.choice(self.labels) if action in ("label", "unlabel") else None
        handlers.act_on_messages(
            self.world.store, actor, self.some_messages(self.rng.choice((1, 3))), action, label
        )

    def open_case(self) -> None:
        (message,) = self.some_messages() or [None]
        if message is None:
            return
        partner = self.rng.choice((self.open_partner, self.closed_partner))
        case, created = handlers.open_case(
            self.world.store,
            self.admin,
            summary="help",
            partner=partner,
            message=message,
            reply=self.rng.choice((None, "we are here")),
        )
        if created:
            self.cases.append(case.id)

    def reply(self) -> None:
        actor = self.rng.choice(list(self.actors().values()))
        if self.cases and self.rng.random() < 0.3:
            handlers.reply_in_case(self.world.store, actor, self.rng.choice(self.cases), "hi")
        elif self.received:
            handlers.reply_to_message(self.world.store, actor, self.some_messages()[0], "hello")

    def close_or_reopen(self) -> None:
        if not self.cases:
            return
        case = self.rng.choice(self.cases)
        if self.rng.random() < 0.6:
            handlers.close_case(self.world.store, self.admin, case, "done")
        else:
            handlers.reopen_case(self.world.store, self.admin, case)

    def delete_label(self) -> None:
        label = self.labels.pop(self.rng.randrange(len(self.labels)))
        handlers.delete_label(self.world.store, self.admin, label)
        self.labels.append(self.world.label())

    def restrict_differently(self) -> None:
        changes = {"labels": self.rng.sample(self.labels, self.rng.choice((0, 1, 2)))}
        if self.rng.random() < 0.3:
            changes["restricted"] = self.rng.random() < 0.7
        handlers.update_partner(self.world.store, self.admin, self.closed_partner, changes)

    STEPS = (
        (receive, 8),
        (labels_before_received, 3),
        (received_late, 3),
        (relabelled, 4),
        (act, 8),
        (open_case, 2),
        (reply, 2),
        (close_or_reopen, 2),
        (delete_label, 1),
        (restrict_differently, 1),
    )

    def step(self) -> str:
        steps, weights = zip(*self.STEPS, strict=True)
        chosen = self.rng.choices(steps, weights)[0]
        with contextlib.suppress(CasesError):  # refused (a message in an open case stays
            chosen(self)  # archived...): nothing changed
        return chosen.__name__

    def check(self, done: str) -> None:
        store = self.world.store
        for name, actor in self.actors().items():
            for simulation in (False, True):
                kept = handlers.message_counts(store, actor, simulation=simulation)
                scanned = scanned_counts(store, actor, simulation=simulation)
                assert kept == scanned, (done, name, simulation)
        assert kept_rows(store) == from_scratch(store), done


@pytest.mark.parametrize("seed", [1, 2])
def test_the_counts_kept_are_the_counts_scanned_after_every_step(any_world, seed):
    story = Story(any_world, random.Random(seed))
    steps = 150 if any_world.store.db.is_postgres else 250
    done = []
    for _ in range(steps):
        done.append(story.step())
        story.check(done[-1])
    # the story went everywhere (a refused step still counts as tried)
    assert {name for name, _ in ((s.__name__, w) for s, w in Story.STEPS)} <= set(done)
    admin = story.admin
    counts = handlers.message_counts(any_world.store, admin, simulation=True)
    assert counts.folders["inbox"] and counts.folders["archived"] and counts.labels


def rebuild_with_the_command(world, monkeypatch, *args: str) -> None:
    settings = world.settings
    monkeypatch.setenv("UPARTNERS_NAMESPACE", settings.namespace)
    monkeypatch.setenv("UPARTNERS_DATA_DIR", str(settings.data_dir))
    for name, value in (
        ("UPARTNERS_DATABASE_URL", settings.database_url),
        ("UPARTNERS_BROKER_URL", settings.broker_url),
    ):
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    assert main(["cases", "rebuild-counts", *args]) == 0


def test_the_rebuild_command_makes_the_rows_kept(any_world, monkeypatch, capsys):
    story = Story(any_world, random.Random(3))
    for _ in range(60):
        story.step()
    kept = kept_rows(any_world.store)
    assert kept and kept == from_scratch(any_world.store)
    with any_world.store.unit_of_work() as uow:  # counts gone wrong: a row lost, one off by 5
        uow.session.execute(delete(MessageSetCount).where(MessageSetCount.flagged.is_(True)))
        uow.session.execute(
            MessageSetCount.__table__.update()
            .where(MessageSetCount.flagged.is_(False))
            .values(n=MessageSetCount.n + 5)
        )
        uow.commit()
    assert kept_rows(any_world.store) != kept
    rebuild_with_the_command(any_world, monkeypatch)
    assert kept_rows(any_world.store) == kept
    rebuild_with_the_command(any_world, monkeypatch, "--org", ORG)
    assert kept_rows(any_world.store) == kept
    assert f"{ORG}:" in capsys.readouterr().out


def migrate_to(store, revision: str) -> None:
    with store.db.engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        if revision == "head":
            command.upgrade(config, "head")
        else:
            command.downgrade(config, revision)


def test_the_migration_counts_the_messages_already_there(any_world):
    story = Story(any_world, random.Random(4))
    for _ in range(60):
        story.step()
    kept = kept_rows(any_world.store)
    assert kept
    migrate_to(any_world.store, "e4ea703bf234")  # 0002: before the counts
    migrate_to(any_world.store, "head")
    assert kept_rows(any_world.store) == kept


def test_concurrent_changes_keep_exact_counts(any_world):
    """People acting at once on the same messages, the labeler relabelling them meanwhile and a
    label deleted meanwhile, on one database: each change starts from what the message is when
    it is locked, not from what was read before (no move counted twice), and no deadlock."""
    world = any_world
    keep, other, gone = world.label("keep"), world.label("other"), world.label("gone")
    received = [message_received() for _ in range(16)]
    for n, event in enumerate(received):
        world.deliver(event)
        world.deliver(message_labeled(event, [keep, gone] if n % 2 else [keep]))
    messages = [event.data["message_id"] for event in received]
    admin = handlers.authenticate(world.store, world.admin.token)
    errors: list[BaseException] = []

    def person(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(20):
                action = rng.choice(("flag", "unflag", "archive", "restore", "label", "unlabel"))
                label = rng.choice((keep, other)) if action in ("label", "unlabel") else None
                handlers.act_on_messages(world.store, admin, rng.sample(messages, 3), action, label)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def labeler() -> None:
        rng = random.Random(99)
        try:
            for n in range(15):
                events = [
                    message_labeled(
                        event,
                        rng.sample([keep, other], rng.choice((0, 1, 2))),
                        occurred_at=event.occurred_at + timedelta(minutes=n + 1),
                    )
                    for event in rng.sample(received, 3)
                ]
                outcomes = dispatch_batch(
                    world.subscriptions["messages"], [e.body() for e in events]
                )
                assert outcomes == [Outcome.ACK] * len(events)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    def deleter() -> None:
        try:
            handlers.delete_label(world.store, admin, gone)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=person, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=labeler), threading.Thread(target=deleter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert kept_rows(world.store) == from_scratch(world.store)
    assert handlers.message_counts(world.store, admin) == scanned_counts(world.store, admin)


def test_a_message_inserted_by_the_commits_own_flush_is_counted(any_world):
    """Nothing flushed it before the commit: the counts still see it arrive."""
    from services.cases.handlers.contacts import ensure_contact
    from services.cases.handlers.rows import ensure_org

    with any_world.store.unit_of_work() as uow:
        session = uow.session
        contact = ensure_contact(session, ensure_org(session, ORG), new_uuid())
        session.add(
            Message(
                id=new_uuid(),
                org=ORG,
                contact_id=contact.id,
                received_at=at(),
                attachments=[],
                labeler_labels=[],
            )
        )
        session.commit()
    assert kept_rows(any_world.store) == from_scratch(any_world.store) != {}

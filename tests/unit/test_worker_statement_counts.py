"""How many SQL statements the consumers spend per message: the pipeline's throughput is bound by
PostgreSQL round trips (bench/pipeline.py), so a handler that goes back to one SELECT per event
for what the unit of work already knows must fail here, not only in a benchmark.

Each test counts the statements (SQLAlchemy ``before_cursor_execute``) of events handled the way
the workers handle them, on SQLite and, where it runs, on PostgreSQL (the same counts: on
PostgreSQL contacts new to the org are inserted on a connection of their own, and what that
INSERT returns joins the batch's session without being read again).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import select

from services.cases.domain import LONG_REF_LENGTH, pseudonym
from services.cases.models import Contact, Message, MessageLabel, Org
from shared.bus.dispatch import Outcome, dispatch, dispatch_batch
from shared.events import MESSAGE_LABELED, read_event
from tests.cases_helpers import (
    ORG,
    OTHER_ORG,
    CasesWorld,
    at,
    ids,
    message_labeled,
    message_received,
    new_uuid,
)
from tests.support import counted


@pytest.fixture(params=["sqlite", "postgresql"])
def any_world(request):
    """The cases service on SQLite, and on PostgreSQL where it is reachable."""
    settings = request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")
    world = CasesWorld(settings)
    yield world
    world.close()


def messages_sub(world: CasesWorld):
    return world.subscriptions["messages"]


def handle_batch(world: CasesWorld, events) -> list[str]:
    with counted(world.store.db.engine) as statements:
        outcomes = dispatch_batch(messages_sub(world), [e.body() for e in events])
    assert outcomes == [Outcome.ACK] * len(events)
    return statements


def handle_one_by_one(world: CasesWorld, events) -> list[str]:
    with counted(world.store.db.engine) as statements:
        outcomes = [dispatch(messages_sub(world), e.body()) for e in events]
    assert outcomes == [Outcome.ACK] * len(events)
    return statements


def test_a_new_contacts_message_costs_at_most_10_statements(any_world):
    """message.received + message.labeled of a new contact in one batch, as a worker handles
    them from its prefetch (the inbox's claim included); the first handlers spent 21, then 12
    before the org came with its labels and the contacts with their open cases. Each
    transaction adds one upsert of the folder counts and two of statistics (the facts' INSERT
    and the daily counts' upsert)."""
    label = any_world.label()
    received = message_received()
    statements = handle_batch(any_world, [received, message_labeled(received, [label])])
    assert len(statements) <= 10, statements
    assert sum(s.startswith("INSERT INTO message_set_counts") for s in statements) == 1
    messages = any_world.ok(any_world.get(any_world.admin, "/api/v1/messages"))
    assert ids(messages) == [received.data["message_id"]]
    assert [label["id"] for label in messages["items"][0]["labels"]] == [label]


def test_a_batch_of_known_contacts_inserts_no_contact(any_world):
    """Most messages come from contacts the org knows: their batch reads them and inserts
    nothing into contacts (it used to try them all, ON CONFLICT DO NOTHING, on a connection of
    its own)."""
    label = any_world.label()
    first = [message_received() for _ in range(3)]
    handle_batch(any_world, first)
    again = [message_received(contact=r.data["contact_uuid"]) for r in first]
    statements = handle_batch(any_world, again + [message_labeled(r, [label]) for r in again])
    assert not [s for s in statements if s.startswith("INSERT INTO contacts")], statements
    with any_world.store.unit_of_work() as uow:
        assert uow.session.query(Contact).count() == 3


def test_one_event_at_a_time_costs_at_most_23_statements_a_message(any_world):
    """Each event in its own transaction (a worker at low load): 23 and 20 before; 17 and 16
    before the folder counts (one upsert) and statistics (two) were kept as messages change."""
    label = any_world.label()
    first = message_received()
    new_contact = handle_one_by_one(any_world, [first, message_labeled(first, [label])])
    assert len(new_contact) <= 22, new_contact
    second = message_received(contact=first.data["contact_uuid"])
    known_contact = handle_one_by_one(any_world, [second, message_labeled(second, [label])])
    assert len(known_contact) <= 23, known_contact
    messages = any_world.ok(any_world.get(any_world.admin, "/api/v1/messages"))
    assert sorted(ids(messages)) == sorted(e.data["message_id"] for e in (first, second))


@pytest.mark.parametrize("pairs", [10, 25])
def test_a_batch_costs_the_same_few_statements_whatever_its_size(any_world, pairs):
    """A batch of one org reads its org with its labels, its contacts with their open cases, and
    its messages, in one query each, and writes each table once (192 statements for 10 pairs at
    first, 56 later, then 12): new contacts, then the same contacts again (their open cases are
    read, their fields updated); the folder counts of the whole batch are one upsert."""
    label = any_world.label()
    received = [message_received() for _ in range(pairs)]
    statements = handle_batch(any_world, received + [message_labeled(r, [label]) for r in received])
    assert len(statements) <= 10, statements
    again = [message_received(contact=r.data["contact_uuid"]) for r in received]
    statements = handle_batch(any_world, again + [message_labeled(r, [label]) for r in again])
    assert len(statements) <= 10, statements
    assert not [s for s in statements if s.startswith(("SELECT cases", "SELECT labels"))]
    assert sum(" JOIN cases " in s for s in statements) == 1, statements
    messages = any_world.ok(any_world.get(any_world.admin, "/api/v1/messages", limit=100))
    assert sorted(ids(messages)) == sorted(r.data["message_id"] for r in received + again)
    assert all(m["labels"] for m in messages["items"])


def test_a_batch_applies_the_live_labels_the_org_query_brought(any_world):
    """The org's labels come with the org in one query: of what the labeler names, a deleted
    label is left out and the live ones are applied; an org without labels applies none."""
    kept, deleted = any_world.label(), any_world.label()
    any_world.ok(any_world.call(any_world.admin, "DELETE", f"/api/v1/labels/{deleted}"), 204)
    received = message_received()
    handle_batch(any_world, [received, message_labeled(received, [kept, deleted])])
    messages = any_world.ok(any_world.get(any_world.admin, "/api/v1/messages"))
    assert [label["id"] for label in messages["items"][0]["labels"]] == [kept]
    any_world.other_org()
    elsewhere = message_received(org=OTHER_ORG)
    handle_batch(any_world, [elsewhere, message_labeled(elsewhere, [kept])])
    with any_world.store.unit_of_work() as uow:
        message = uow.session.get(Message, elsewhere.data["message_id"])
        assert message is not None and message.labelled
        assert not uow.session.scalars(
            select(MessageLabel).where(MessageLabel.message_id == message.id)
        ).all()


def test_what_a_unit_of_work_knows_ends_with_its_transaction(any_world):
    """After a rollback (a failed batch) nothing remembered from before is used again."""
    from services.cases.handlers.contacts import ensure_contact
    from services.cases.handlers.rows import ensure_org
    from services.cases.models import Contact
    from tests.cases_helpers import ORG

    contact_uuid = new_uuid()
    with any_world.store.unit_of_work() as uow:
        session = uow.session
        before = ensure_contact(session, ensure_org(session, ORG), contact_uuid)
        session.rollback()
        with counted(any_world.store.db.engine) as statements:
            org = ensure_org(session, ORG)
            after = ensure_contact(session, org, contact_uuid)
        assert after is not before
        assert [s.split()[0] for s in statements] == ["SELECT", "SELECT", "INSERT"], statements
        uow.commit()
    with any_world.store.unit_of_work() as uow:
        rows = uow.session.scalars(select(Contact).where(Contact.uuid == contact_uuid)).all()
        assert [row.id for row in rows] == [after.id]


def test_a_failed_batch_is_handled_again_one_event_at_a_time(any_world):
    """The batch's rows were rolled back: the events handled again one by one must not be
    served the contact and message the failed batch had inserted."""
    label = any_world.label()
    received = message_received()
    sub = messages_sub(any_world)
    failures = [RuntimeError("the database went away")]

    def fails_once(uow, event):
        if failures:
            raise failures.pop()
        sub.handlers[MESSAGE_LABELED](uow, event)

    flaky = dataclasses.replace(sub, handlers={**sub.handlers, MESSAGE_LABELED: fails_once})
    bodies = [received.body(), message_labeled(received, [label]).body()]
    assert dispatch_batch(flaky, bodies) == [Outcome.ACK, Outcome.ACK]
    assert not failures
    messages = any_world.ok(any_world.get(any_world.admin, "/api/v1/messages"))
    assert ids(messages) == [received.data["message_id"]]
    assert [label["id"] for label in messages["items"][0]["labels"]] == [label]


# --- the labeler --------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def labeler_subscription(request):
    """The labeler worker's message subscription, its labels already known."""
    from services.labeler.models import MIGRATIONS, open_store
    from services.labeler.worker import subscriptions
    from tests.labeler_helpers import keywords, label_event

    settings = request.getfixturevalue("settings" if request.param == "sqlite" else "pg_settings")
    store = open_store(settings)
    store.db.migrate(MIGRATIONS)
    messages, labels = subscriptions(settings, store)
    event = label_event("Help", [keywords("ajuda")])
    assert dispatch(labels, event.body()) == Outcome.ACK
    yield messages
    store.db.dispose()


def test_the_labeler_reads_the_label_revision_once_per_batch(labeler_subscription):
    """A batch of 10 messages: the inbox's claim, one revision SELECT (and the labels once),
    one upsert of the 10 messages, the outbox INSERT (the first handler read the revision for
    every message: 23; then it wrote each message alone: 15; the inbox took two: 6)."""
    from tests.labeler_helpers import message_received as labeler_message

    bodies = [labeler_message(f"preciso de ajuda {n}").body() for n in range(10)]
    with counted(labeler_subscription.store.db.engine) as statements:
        assert dispatch_batch(labeler_subscription, bodies) == [Outcome.ACK] * 10
    assert sum(s.startswith("SELECT org_labels") for s in statements) == 1, statements
    assert sum(s.startswith("INSERT INTO messages") for s in statements) == 1, statements
    assert len(statements) <= 5, statements


def test_a_new_contact_whose_short_reference_is_taken_gets_the_long_one(any_world):
    """Two contacts of an org whose short pseudonyms collide: the batch that brings the second
    one gives it the long form (inserted apart from the batch's other new contacts)."""
    contact, other = new_uuid(), new_uuid()
    with any_world.store.db.session() as session:
        org = session.get(Org, ORG)
        short = pseudonym(org.pseudonym_salt, ORG, contact)
        session.add(Contact(id=new_uuid(), org=ORG, uuid=other, ref=short, fields={}))
        session.commit()
    batch = [message_received(contact=contact), message_received(contact=new_uuid())]
    handle_batch(any_world, batch)
    with any_world.store.db.session() as session:
        ref = session.scalar(select(Contact.ref).where(Contact.uuid == contact))
    assert ref is not None and ref != short and len(ref) == len("C-") + LONG_REF_LENGTH


def test_two_batches_bringing_the_same_new_contact_do_not_wait_for_each_other(pg_settings):
    """Two cases workers, one contact's messages in both batches: the contact is inserted and
    committed apart, so the second batch does not wait for the first one's commit (it used to:
    the most common wait with two workers)."""
    world = CasesWorld(pg_settings)
    try:
        contact = new_uuid()
        sub = messages_sub(world)
        first = message_received(contact=contact)
        with world.store.unit_of_work() as uow:  # the first batch, prepared and still open
            uow.claim(sub.queue.consumer, [first.id])
            sub.prepare(uow, [read_event(first.body())])
            done = threading.Event()

            def second_batch() -> None:
                events = [message_received(contact=contact), message_received(contact=contact)]
                dispatch_batch(sub, [e.body() for e in events])
                done.set()

            thread = threading.Thread(target=second_batch)
            thread.start()
            assert done.wait(timeout=10), "the second batch waited for the first one's commit"
            uow.commit()
        thread.join(timeout=10)
    finally:
        world.close()


def test_a_batch_compiles_no_statement_anew(any_world):
    """Every statement of a worker's batch comes from SQLAlchemy's compiled cache once a first
    batch ran: one built anew at each batch (``.values(rows)``, an upsert rebuilt) was compiled
    again every time, a fifth of the cases worker's CPU (bench/cases_worker.py)."""
    from sqlalchemy import event
    from sqlalchemy.engine.default import CACHE_HIT

    label = any_world.label()
    engine = any_world.store.db.engine
    missed: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        transaction = statement.startswith(("BEGIN", "COMMIT", "ROLLBACK"))  # SQLite's
        if context is not None and context.cache_hit != CACHE_HIT and not transaction:
            missed.append(" ".join(statement.split())[:120])

    for contacts in ([None] * 3, [None] * 5):  # the first batch fills the cache
        missed.clear()
        # One moment for all: the helpers' clock moves a minute a message, and messages either
        # side of midnight add to two days' count rows, which one batch of the two would
        # upsert as one row (a single execute) and the other as two (an executemany).
        received = [message_received(contact=c, received_at=at(0)) for c in contacts]
        event.listen(engine, "before_cursor_execute", note)
        try:
            handle_batch(any_world, received)
            handle_batch(any_world, [message_labeled(r, [label]) for r in received])
        finally:
            event.remove(engine, "before_cursor_execute", note)
    assert missed == []

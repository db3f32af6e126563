"""Exports on the real PostgreSQL and RabbitMQ: a few thousand messages, bulk-inserted, exported
as XLSX and CSV by the real cases worker (export.requested relayed to the broker, consumed from
the cases.exports queue), read back whole; and a restricted partner's export built in many
small batches, holding exactly its labels' messages."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import insert, select

from services.cases.domain import pseudonym
from services.cases.handlers import exports
from services.cases.models import Contact, Message, MessageLabel, Org
from services.cases.worker import subscriptions
from shared.bus.consumer import AmqpWorker
from shared.bus.publisher import ConfirmingPublisher
from shared.relay import Relay
from tests.cases_helpers import ORG, CasesWorld
from tests.unit.test_cases_access import identifying
from tests.waiting import eventually

pytestmark = pytest.mark.integration

MESSAGES = 3_000


@pytest.fixture
def world(pg_settings):
    world = CasesWorld(pg_settings)
    yield world
    world.close()


def seed(world, labels, count=MESSAGES):
    """``count`` messages of 300 contacts, by bulk inserts; message n carries labels[n % len]."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with world.store.db.session() as session, session.begin():
        salt = session.get(Org, ORG).pseudonym_salt
        contacts = []
        for _ in range(300):
            contact_uuid = str(uuid.uuid4())
            ref = pseudonym(salt, ORG, contact_uuid, 12)
            contacts.append({"id": str(uuid.uuid4()), "org": ORG, "uuid": contact_uuid, "ref": ref})
        session.execute(
            insert(Contact), [c | {"fields": {}, "created_at": start} for c in contacts]
        )
        messages, links = [], []
        for n in range(count):
            message_id = str(uuid.uuid4())
            moment = start + timedelta(seconds=n // 3)  # three at each moment: ties for the keyset
            messages.append(
                {
                    "id": message_id,
                    "org": ORG,
                    "contact_id": contacts[n % 300]["id"],
                    "text": f"mensagem {n}" if n % 100 else "=1+1",
                    "attachments": [],
                    "labeler_labels": [],
                    "received_at": moment,
                    "labelled": True,
                    "created_at": moment,
                }
            )
            links.append({"message_id": message_id, "label_id": labels[n % len(labels)]})
        session.execute(insert(Message), messages)
        session.execute(insert(MessageLabel), links)
    return {m["id"] for m in messages}


@pytest.fixture
def worker(pg_settings, world):
    amqp = AmqpWorker(pg_settings, subscriptions(pg_settings, world.store))
    thread = threading.Thread(target=amqp.run, daemon=True)
    thread.start()
    eventually(lambda: amqp.broker_connected, what="the worker connected")
    yield amqp
    amqp.should_stop = True
    thread.join(timeout=30)
    amqp.connection.release()


def relay_outbox(world, settings):
    relay = Relay(world.store, ConfirmingPublisher(settings), batch=100)
    try:
        while relay.relay_once():
            pass
    finally:
        relay.publisher.close()


def rows_of(world, export) -> list[list[str]]:
    response = world.get(world.admin, export["file"])
    assert response.status_code == 200
    if export["format"] == "csv":
        return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    book = load_workbook(io.BytesIO(response.data), read_only=True)
    rows = [
        ["" if v is None else str(v) for v in row]
        for row in book.active.iter_rows(values_only=True)
    ]
    book.close()
    return rows


def test_thousands_of_messages_exported_by_the_worker_through_the_broker(
    world, worker, pg_settings
):
    label = world.label("all")
    everything = seed(world, [label])
    asked = [
        world.ok(world.post(world.admin, "/api/v1/exports", {"kind": "messages", "format": f}), 202)
        for f in ("xlsx", "csv")
    ]
    relay_outbox(world, pg_settings)
    for export in asked:
        path = f"/api/v1/exports/{export['id']}"
        done = eventually(
            lambda path=path: (
                (e := world.ok(world.get(world.admin, path)))["state"] == "done" and e
            ),
            timeout=60,
            what="the export built",
        )
        assert done["total"] == done["progress"] == MESSAGES
        header, *rows = rows_of(world, done)
        assert header[0] == "message" and len(rows) == MESSAGES
        assert {row[0] for row in rows} == everything
        assert sum(row[3] == "'=1+1" for row in rows) == MESSAGES // 100
        text = "\n".join(",".join(row[2:5]) for row in rows)  # contact, text, labels
        assert not identifying(text)
    assert len(world.ok(world.get(world.admin, "/api/v1/notifications"))["items"]) == 2


def test_a_restricted_partners_export_in_small_batches(world, pg_settings):
    mine, theirs = world.label("mine"), world.label("theirs")
    agent = world.user(world.partner("P", restricted=True, labels=(mine,)))
    seed(world, [mine, theirs])
    with world.store.db.session() as session:
        wanted = set(
            session.scalars(select(MessageLabel.message_id).where(MessageLabel.label_id == mine))
        )
    asked = world.ok(
        world.post(agent, "/api/v1/exports", {"kind": "messages", "format": "csv"}), 202
    )
    with world.store.unit_of_work() as uow:
        state = exports.build_export(
            uow.session, pg_settings, ORG, asked["id"], batch=250, progress_every=500
        )
    assert state == "done"
    export = world.ok(world.get(agent, f"/api/v1/exports/{asked['id']}"))
    assert export["total"] == export["progress"] == MESSAGES // 2
    download = world.get(agent, export["file"])
    rows = list(csv.reader(io.StringIO(download.data.decode("utf-8-sig"))))[1:]
    assert len(rows) == len(wanted) and {row[0] for row in rows} == wanted
    assert {row[4] for row in rows} == {"mine"}

"""The labeler service on the embedded default: label projection, labelling, relabel."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.labeler import handlers
from services.labeler.models import MIGRATIONS, Outbox, open_store
from services.labeler.worker import subscriptions
from shared import events as ev
from shared.bus import topology
from shared.bus.embedded import EmbeddedBus
from shared.events import new_event, read_event
from tests.labeler_helpers import (
    ORG,
    in_groups,
    keywords,
    label_deleted,
    label_event,
    message_received,
    step,
)

GROUP = "75308f26-a209-4726-b621-91983dd2268d"


class Labeler:
    """The labeler worker's subscriptions on an embedded bus, driven one message at a time."""

    def __init__(self, settings):
        self.store = open_store(settings)
        self.store.db.migrate(MIGRATIONS)
        self.bus = EmbeddedBus(settings)
        self.subs = subscriptions(settings, self.store)
        self.namespace = settings.namespace

    def publish(self, *events):
        self.bus.publish([(e.id, e.name, e.body()) for e in events])
        while any(self.bus.consume_one(sub, lambda: False) for sub in self.subs):
            pass

    def labeled(self):
        with self.store.db.session() as session:
            rows = session.scalars(select(Outbox).order_by(Outbox.position)).all()
        return [read_event(r.envelope) for r in rows if r.name == ev.MESSAGE_LABELED]

    def dead_letters(self):
        return sum(
            self.bus.depth(topology.dlq_name(sub.queue.name(self.namespace))) for sub in self.subs
        )


@pytest.fixture
def labeler(settings):
    labeler = Labeler(settings)
    yield labeler
    labeler.store.db.dispose()


def test_every_message_gets_exactly_one_labeled_event_even_with_no_label(labeler):
    labeler.publish(message_received("bom dia"))
    [event] = labeler.labeled()
    assert event.data["labels"] == [] and event.data["synced"] == []


def test_step_group_and_keyword_labels(labeler):
    by_step = label_event("Poll Q1", [step()])
    by_group = label_event("Helpline", [in_groups(GROUP)], synced=True)
    by_word = label_event("Violence", [keywords("violencia", "abuso")])
    labeler.publish(by_step, by_group, by_word)
    labeler.publish(message_received("Sofri VIOLÊNCIA em casa!", groups=(GROUP,)))
    [event] = labeler.labeled()
    assert sorted(event.data["labels"]) == sorted(
        e.data["label_uuid"] for e in (by_step, by_group, by_word)
    )
    assert event.data["synced"] == [by_group.data["label_uuid"]]


def test_a_redelivered_message_is_labelled_once(labeler):
    message = message_received()
    labeler.publish(message)
    labeler.publish(message)
    assert len(labeler.labeled()) == 1


def test_label_changes_apply_to_later_messages_and_deletion_stops_labelling(labeler):
    created = label_event("Help", [keywords("ajuda")], version=1)
    labeler.publish(created)
    labeler.publish(message_received("preciso de ajuda"))
    uuid = created.data["label_uuid"]
    labeler.publish(label_deleted(uuid, version=2))
    labeler.publish(message_received("preciso de ajuda"))
    first, second = labeler.labeled()
    assert first.data["labels"] == [uuid] and second.data["labels"] == []


def test_an_older_update_arriving_late_does_not_win(labeler):
    uuid = "0a0a0a0a-0000-4000-8000-00000000000a"
    labeler.publish(label_event("Help v3", [keywords("socorro")], label_uuid=uuid, version=3))
    labeler.publish(
        label_event(
            "Help v2", [keywords("ajuda")], label_uuid=uuid, version=2, event=ev.LABEL_UPDATED
        )
    )
    labeler.publish(message_received("socorro"), message_received("ajuda"))
    assert [e.data["labels"] for e in labeler.labeled()] == [[uuid], []]


def test_a_deleted_label_is_not_resurrected_by_a_late_create(labeler):
    uuid = "0b0b0b0b-0000-4000-8000-00000000000b"
    labeler.publish(label_deleted(uuid, version=2))
    labeler.publish(label_event("Help", [keywords("ajuda")], label_uuid=uuid, version=1))
    labeler.publish(message_received("ajuda"))
    assert labeler.labeled()[0].data["labels"] == []


def test_inactive_labels_do_not_label(labeler):
    labeler.publish(label_event("Off", [keywords("ajuda")], active=False))
    labeler.publish(message_received("ajuda"))
    assert labeler.labeled()[0].data["labels"] == []


def test_a_label_with_an_invalid_rule_is_dead_lettered(labeler):
    labeler.publish(label_event("Bad", [{"type": "keywords", "quantifier": "some"}]))
    assert labeler.dead_letters() == 1


def test_simulation_messages_are_labelled_and_keep_the_flag(labeler):
    labeler.publish(label_event("Help", [keywords("ajuda")]))
    labeler.publish(message_received("ajuda", simulation=True))
    [event] = labeler.labeled()
    assert event.data["simulation"] is True and len(event.data["labels"]) == 1


def test_messages_without_text_are_labelled_by_step(labeler):
    labeler.publish(label_event("Poll", [step()]), label_event("Help", [keywords("ajuda")]))
    labeler.publish(message_received(None))
    [event] = labeler.labeled()
    assert len(event.data["labels"]) == 1


def test_relabel_emits_only_for_messages_whose_labels_changed(labeler):
    labeler.publish(
        message_received("preciso de ajuda", received_at="2026-11-20T10:00:00.000000+00:00"),
        message_received("bom dia", received_at="2026-11-20T11:00:00.000000+00:00"),
        message_received("ajuda antiga", received_at="2026-10-01T10:00:00.000000+00:00"),
    )
    before = len(labeler.labeled())
    added = label_event("Help", [keywords("ajuda")])
    labeler.publish(added)
    now = datetime(2026, 11, 21, tzinfo=UTC)
    report = handlers.relabel(labeler.store, ORG, days=7, now=now, batch=1)
    assert (report.examined, report.changed) == (2, 1)  # the October one is out of range
    new = labeler.labeled()[before:]
    assert [e.data["labels"] for e in new] == [[added.data["label_uuid"]]]
    again = handlers.relabel(labeler.store, ORG, days=7, now=now)
    assert again.changed == 0


def test_a_message_sent_again_under_a_new_event_id_keeps_its_newest_labels(labeler):
    """In one batch or in two: the message has one row, with the newest labelling."""
    from services.labeler.models import Message
    from shared.bus.dispatch import Outcome, dispatch_batch

    help_label = label_event("Help", [keywords("ajuda")])
    labeler.publish(help_label)
    first = message_received("preciso de ajuda")

    def again(text):
        return new_event(
            ev.MESSAGE_RECEIVED, org=ORG, producer="ingest", data={**first.data, "text": text}
        )

    def labels():
        with labeler.store.db.session() as session:
            [row] = session.scalars(select(Message)).all()
        return row.labels

    messages = labeler.subs[0]
    assert dispatch_batch(messages, [first.body(), again("obrigado").body()]) == [Outcome.ACK] * 2
    assert labels() == []
    labeler.publish(again("ajuda outra vez"))
    assert labels() == [help_label.data["label_uuid"]]

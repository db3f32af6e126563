"""The relay marks a row published only with its broker confirm: one statement claims and marks
the batch, what the broker did not confirm is unmarked before the commit, and a failed publish
rolls the whole batch back."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shared.bus.publisher import BrokerUnavailable
from shared.relay import Relay
from tests.support import Outbox, message_received, probe_store


class Broker:
    """Confirms what ``accept`` says; records every publish."""

    def __init__(self, accept=lambda message_id: True, fail: bool = False) -> None:
        self.accept, self.fail, self.seen = accept, fail, []

    def publish(self, messages):
        self.seen.append([message_id for message_id, _, _ in messages])
        if self.fail:
            raise BrokerUnavailable("down")
        return [message_id for message_id, _, _ in messages if self.accept(message_id)]

    def idle(self, seconds):
        self.seen.append("idle")

    def close(self):
        pass


@pytest.fixture
def store(settings):
    """The probe service's store on the test's database, its connections closed afterwards."""
    store = probe_store(settings)
    yield store
    store.db.dispose()


def outbox_with(store, count: int) -> list[str]:
    with store.unit_of_work() as uow:
        ids = [
            uow.emit("message.received", org="demo", data=message_received(text=f"m{i}").data).id
            for i in range(count)
        ]
        uow.commit()
    return ids


def unpublished(store) -> list[str]:
    with store.db.session() as session:
        rows = session.scalars(
            select(Outbox.event_id).where(Outbox.published_at.is_(None)).order_by(Outbox.position)
        )
        return list(rows)


def test_rows_the_broker_did_not_confirm_stay_to_publish_again(store):
    ids = outbox_with(store, 5)
    refused = {ids[1], ids[3]}
    broker = Broker(accept=lambda message_id: message_id not in refused)
    relay = Relay(store, broker, batch=10)
    assert relay.relay_once() == 3
    assert broker.seen == [ids]  # in the outbox's order
    assert unpublished(store) == [ids[1], ids[3]]
    broker.accept = lambda message_id: True
    assert relay.relay_once() == 2
    assert unpublished(store) == []
    assert relay.relay_once() == 0


def test_a_failed_publish_leaves_the_whole_batch_to_publish(store):
    ids = outbox_with(store, 3)
    relay = Relay(store, Broker(fail=True), batch=2)
    with pytest.raises(BrokerUnavailable):
        relay.relay_once()
    assert unpublished(store) == ids
    relay.publisher = Broker()
    assert relay.relay_once() == 2  # a batch at a time, oldest first
    assert unpublished(store) == [ids[2]]


class ArrivingBroker(Broker):
    """A row is committed while the first batch is out; stops the relay after ``looks`` idle
    periods."""

    def __init__(self, store, relay_of, looks: int) -> None:
        super().__init__()
        self.store, self.relay_of, self.looks = store, relay_of, looks

    def publish(self, messages):
        if not self.seen:
            outbox_with(self.store, 1)
        return super().publish(messages)

    def idle(self, seconds):
        super().idle(seconds)
        self.looks -= 1
        if self.looks == 0:
            self.relay_of().should_stop = True


@pytest.mark.parametrize("batch", [2, 10])
def test_only_a_full_batch_is_followed_at_once_by_the_next(pg_settings, batch):
    """After a shorter batch the relay idles before it looks again: rows committed while it
    was out wait for the next look, so that a trickle is published in batches rather than one
    row at a time (at 100 webhooks/s nearly every other claim held a single row). On
    PostgreSQL: on SQLite the batch's transaction would keep the row from being written."""
    store = probe_store(pg_settings)
    ids = outbox_with(store, 2)
    relays: list[Relay] = []
    broker = ArrivingBroker(store, lambda: relays[0], looks=2)
    relays.append(Relay(store, broker, batch=batch, idle=0))
    try:
        relays[0].run()
    finally:
        store.db.engine.dispose()
    published = [entry for entry in broker.seen if entry != "idle"]
    assert [len(entry) for entry in published] == [2, 1]
    assert published[0] == ids
    where_idle = [i for i, entry in enumerate(broker.seen) if entry == "idle"]
    if batch == 2:  # full: the row that came in meanwhile is claimed at once
        assert where_idle == [2, 3]
    else:
        assert where_idle == [1, 3]


def test_a_quiet_relay_looks_less_often_until_rows_come_again(store, monkeypatch):
    """Quiet for QUIET_AFTER seconds, a relay idles QUIET_SLOWER times longer between looks;
    the first look that finds rows brings it back to its interval."""
    import time

    from shared import relay as relay_module

    monkeypatch.setattr(relay_module, "QUIET_AFTER", 0.05)
    waits: list[float] = []
    relays: list[Relay] = []

    class QuietBroker(Broker):
        def idle(self, seconds):
            waits.append(seconds)
            time.sleep(seconds)
            if len(waits) == 12:
                outbox_with(store, 1)
            if len(waits) == 14:
                relays[0].should_stop = True

    broker = QuietBroker()
    relays.append(Relay(store, broker, batch=10, idle=0.01))
    relays[0].run()
    assert waits[0] == 0.01
    quiet = 0.01 * relay_module.QUIET_SLOWER
    assert waits[:12].count(quiet) >= 3, waits  # after 0.05 s without a row
    assert len([entry for entry in broker.seen if entry != "idle"]) == 1  # the row, published
    assert waits[12:] == [0.01, 0.01], waits

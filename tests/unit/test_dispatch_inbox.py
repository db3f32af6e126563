"""A batch's inbox: one statement claims its events (writes their rows and says which are new);
an event handled before, or twice in the batch, is handled once."""

from __future__ import annotations

from sqlalchemy import func, select

from shared.bus.dispatch import Outcome, Subscription, dispatch_batch
from shared.events import MESSAGE_RECEIVED
from tests.support import PROBE_QUEUE, Inbox, Seen, counted, message_received, probe_store, record


def test_a_batch_handles_each_new_event_once_and_claims_them_in_one_statement(settings):
    sub = Subscription(PROBE_QUEUE, probe_store(settings), {MESSAGE_RECEIVED: record})
    events = [
        message_received(f"help {i}", message_id=f"8a0c6a7e-0000-4000-8000-00000000040{i}")
        for i in range(3)
    ]
    assert dispatch_batch(sub, [events[0].body(), events[1].body()]) == [Outcome.ACK] * 2
    again = [events[1], events[2], events[2], events[0]]  # two handled, one new twice
    with counted(sub.store.db.engine) as sent:
        assert dispatch_batch(sub, [e.body() for e in again]) == [Outcome.ACK] * 4
    inbox = [s for s in sent if "inbox" in s]
    assert len(inbox) == 1 and inbox[0].startswith("INSERT INTO inbox"), inbox
    with sub.store.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Seen)) == 3
        assert set(session.scalars(select(Inbox.event_id))) == {e.id for e in events}

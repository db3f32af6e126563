"""Events a subscription's handlers would do nothing with are acknowledged without a transaction:
no statement, no inbox row. Everything else is handled as before, alone or in a batch."""

from __future__ import annotations

from sqlalchemy import func, select

from shared.bus.dispatch import Outcome, Subscription, dispatch, dispatch_batch
from shared.events import MESSAGE_RECEIVED
from tests.support import (
    PROBE_QUEUE,
    Inbox,
    Seen,
    counted,
    message_received,
    probe_store,
    record,
)


def quiet(data) -> bool:
    return data["text"] == "nothing to do"


def rows(store, model) -> int:
    with store.db.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def subscription(settings) -> Subscription:
    store = probe_store(settings)
    return Subscription(
        PROBE_QUEUE, store, {MESSAGE_RECEIVED: record}, skip={MESSAGE_RECEIVED: quiet}
    )


def test_a_skipped_event_is_acknowledged_without_touching_the_database(settings):
    sub = subscription(settings)
    skipped = message_received("nothing to do")
    with counted(sub.store.db.engine) as sent:
        assert dispatch(sub, skipped.body()) is Outcome.ACK
    assert sent == []
    assert rows(sub.store, Inbox) == 0 and rows(sub.store, Seen) == 0


def test_other_events_of_the_same_name_are_handled_and_recorded(settings):
    sub = subscription(settings)
    assert dispatch(sub, message_received("please help").body()) is Outcome.ACK
    assert rows(sub.store, Inbox) == 1 and rows(sub.store, Seen) == 1


def test_a_batch_handles_only_what_is_not_skipped(settings):
    sub = subscription(settings)
    handled = [
        message_received("please help", message_id=f"8a0c6a7e-0000-4000-8000-00000000010{i}")
        for i in range(3)
    ]
    skipped = [
        message_received("nothing to do", message_id=f"8a0c6a7e-0000-4000-8000-00000000020{i}")
        for i in range(2)
    ]
    batch = [handled[0], skipped[0], handled[1], skipped[1], handled[2]]
    assert dispatch_batch(sub, [e.body() for e in batch]) == [Outcome.ACK] * 5
    with sub.store.db.session() as session:
        assert set(session.scalars(select(Seen.event_id))) == {e.id for e in handled}
        assert set(session.scalars(select(Inbox.event_id))) == {e.id for e in handled}


def test_a_batch_with_nothing_to_do_opens_no_transaction(settings):
    sub = subscription(settings)
    batch = [
        message_received("nothing to do", message_id=f"8a0c6a7e-0000-4000-8000-00000000030{i}")
        for i in range(2)
    ]
    with counted(sub.store.db.engine) as sent:
        assert dispatch_batch(sub, [e.body() for e in batch]) == [Outcome.ACK] * 2
    assert sent == []

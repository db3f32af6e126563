"""PostgreSQL restarts under load: ingest answers 503 while it is away (never a 2xx without a
commit, never a 500 or a dropped connection), answers 200 again within 5 s of its return, and
every message it accepted is labelled in the end; workers and relays ride the outage out.

1,000 webhooks at 50/s; the session's private cluster is stopped (``pg_ctl stop -m fast``:
open transactions rolled back, every connection closed) 5 s in and started again 10 s in.
"""

from __future__ import annotations

import time

import pytest

from tests.fault.load import OpenLoop, status_counts
from tests.fault.pipeline import (
    assert_exactly_once,
    body_factory,
    ingest_message_ids,
    sleep_until,
    wait_until_labelled,
    wait_until_settled,
)

pytestmark = pytest.mark.fault

RATE, COUNT = 50, 1000
STOP_AT, START_AT = 5.0, 10.0
RECOVERS_WITHIN = 5.0  # seconds after PostgreSQL accepts connections again
LABELLED_WITHIN = 60.0


def test_database_restart_answers_503_then_recovers(world, private_postgres, private_rabbit):
    sender = OpenLoop(world.webhook_url, body_factory(), world.headers, rate=RATE, count=COUNT)
    sender.start()
    try:
        sleep_until(sender.at(STOP_AT))
        private_postgres.stop("fast")
        stopped = time.monotonic()
        sleep_until(sender.at(START_AT))
    finally:
        if not private_postgres.running:
            private_postgres.start()  # returns once it accepts connections
        back = time.monotonic()
        answers = sender.join(timeout=COUNT / RATE + 30)

    assert len(answers) == COUNT
    unexpected = [a for a in answers if a.status not in (200, 503) or a.error]
    assert not unexpected, f"answers: {status_counts(answers)}; first: {unexpected[0]}"
    during = [a for a in answers if stopped <= a.scheduled < back]
    assert any(a.status == 503 for a in during), "the outage was not felt: nothing answered 503"

    first_ok = min(a.answered for a in answers if a.ok and a.answered >= back) - back
    late = [a for a in answers if a.status == 503 and a.scheduled >= back + RECOVERS_WITHIN]
    last_503 = max((a.answered for a in answers if a.status == 503), default=back) - back
    print(
        f"\nPostgreSQL down {back - stopped:.1f}s: {status_counts(answers)}; first 200 "
        f"{first_ok:.2f}s after it accepted connections again, last 503 at {last_503:.2f}s"
    )
    assert first_ok <= RECOVERS_WITHIN
    assert not late, f"{len(late)} requests sent {RECOVERS_WITHIN:.0f}s after the return got 503"

    accepted = {a.message_id for a in answers if a.ok}
    stored = ingest_message_ids(world)
    assert accepted <= stored, f"{len(accepted - stored)} answered 200 but not stored"
    # A 503 whose commit went through after all (its answer lost with the connection) is
    # stored too: the engine's retry finds it. Every stored message must come out labelled.
    took = wait_until_labelled(
        world, stored, since=back, within=LABELLED_WITHIN, rabbit=private_rabbit
    )
    print(f"all {len(stored)} stored messages labelled {took:.1f}s after PostgreSQL's return")
    wait_until_settled(world, private_rabbit)
    assert_exactly_once(world, stored)
    assert world.stack.dead() == []

"""The labeler worker is killed (``kill -9``) three times while 2,000 webhooks flow, and started
again each time as a supervisor would: every message is labelled, none twice, nothing dead.

A killed worker dies with a batch in hand, possibly half-way through its transaction: the
database rolls that back, the broker hands the unacknowledged messages to the next worker, and
the inbox makes the ones already committed (but not yet acknowledged) a no-op.
"""

from __future__ import annotations

import time

import pytest

from tests.fault.load import OpenLoop, status_counts
from tests.fault.pipeline import (
    assert_exactly_once,
    body_factory,
    labelled_count,
    sleep_until,
    wait_until_labelled,
    wait_until_settled,
)

pytestmark = pytest.mark.fault

RATE, COUNT = 100, 2000
KILLS_AT = (4.0, 9.0, 14.0)  # seconds into the load
LABELLED_WITHIN = 60.0  # seconds after the last webhook was answered
WORKER = "worker-labeler"


def test_killed_consumer_loses_nothing_and_does_nothing_twice(world, private_rabbit):
    sender = OpenLoop(world.webhook_url, body_factory(), world.headers, rate=RATE, count=COUNT)
    sender.start()
    labelled_at_kills = []
    try:
        for moment in KILLS_AT:
            sleep_until(sender.at(moment))
            # Kill a worker that is consuming (a restarted one may still be starting up).
            labelled_at_kills.append(_wait_for_progress(world, since=labelled_at_kills))
            world.stack.kill(WORKER)
            world.stack.restart(WORKER)
    finally:
        answers = sender.join(timeout=COUNT / RATE + 60)
    sent = time.monotonic()

    assert len(answers) == COUNT
    failed = [a for a in answers if not a.ok or a.message_id is None]
    assert not failed, f"answers: {status_counts(answers)}; first failure: {failed[0]}"
    accepted = {a.message_id for a in answers}
    assert len(accepted) == COUNT

    took = wait_until_labelled(
        world, accepted, since=sent, within=LABELLED_WITHIN, rabbit=private_rabbit
    )
    print(
        f"\nkill -9 of {WORKER} x{len(KILLS_AT)} (messages labelled at each kill: "
        f"{labelled_at_kills}); all {COUNT} labelled {took:.1f}s after the last webhook"
    )
    wait_until_settled(world, private_rabbit)
    assert_exactly_once(world, accepted)
    assert world.stack.dead() == []


def _wait_for_progress(world, since: list[int], timeout: float = 30.0) -> int:
    """Wait until the labeler stored more messages than at the previous kill; return the count."""
    before = since[-1] if since else 0
    deadline = time.monotonic() + timeout
    while (count := labelled_count(world)) <= before:
        assert time.monotonic() < deadline, f"{WORKER} made no progress in {timeout:.0f}s"
        time.sleep(0.05)
    return count

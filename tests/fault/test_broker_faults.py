"""The broker goes away under load and comes back: ingest keeps answering 2xx (it never waits
for the broker), and once the broker is back every accepted message is labelled, once.

1,000 webhooks at 50/s; the broker breaks 5 s in and is back 15 s in. Both faults run on the
session's private RabbitMQ node: ``rabbitmqctl stop_app`` / ``start_app`` (an orderly restart),
and ``kill -9`` of its Erlang VM followed by a fresh start on the same data (a crash).

These two once failed now and then (a few messages lost after a reconnection): the worker's
batch handling, not RabbitMQ, acknowledged messages it had not handled. See docs/operations.md,
"What the fault tests prove". A failure message says how far each missing message got.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.fault.load import OpenLoop, status_counts
from tests.fault.pipeline import (
    assert_exactly_once,
    body_factory,
    sleep_until,
    wait_until_labelled,
    wait_until_settled,
)

pytestmark = pytest.mark.fault

RATE, COUNT = 50, 1000
BREAK_AT, BACK_AT = 5.0, 15.0
LABELLED_WITHIN = 30.0  # seconds after the restart began (start_app, or the node's start)


def _outage(world, rabbit, break_it: Callable[[], None], restore: Callable[[], None], what: str):
    sender = OpenLoop(world.webhook_url, body_factory(), world.headers, rate=RATE, count=COUNT)
    sender.start()
    broken = False
    try:
        sleep_until(sender.at(BREAK_AT))
        break_it()
        broken = True
        down = time.monotonic()
        sleep_until(sender.at(BACK_AT))
        restarting = time.monotonic()
        restore()  # returns once the node accepts AMQP connections again
        broken = False
        back = time.monotonic()
    finally:
        if broken:
            restore()
        answers = sender.join(timeout=COUNT / RATE + 30)

    assert len(answers) == COUNT
    failed = [a for a in answers if not a.ok or a.message_id is None]
    assert not failed, f"answers: {status_counts(answers)}; first failure: {failed[0]}"
    accepted = {a.message_id for a in answers}
    assert len(accepted) == COUNT

    took = wait_until_labelled(
        world, accepted, since=restarting, within=LABELLED_WITHIN, rabbit=rabbit
    )
    print(
        f"\n{what}: broker down {down - sender.at(0):.1f}s into the load, restarted at "
        f"{restarting - sender.at(0):.1f}s, serving {back - restarting:.1f}s later; all {COUNT} "
        f"answered 2xx and labelled {took:.1f}s after the restart began"
    )
    wait_until_settled(world, rabbit)
    assert_exactly_once(world, accepted)
    assert world.stack.dead() == []


def test_broker_restart_loses_nothing(world, private_rabbit):
    _outage(
        world,
        private_rabbit,
        private_rabbit.stop_app,
        private_rabbit.start_app,
        "stop_app/start_app",
    )


def test_broker_killed_loses_nothing(world, private_rabbit):
    _outage(world, private_rabbit, private_rabbit.kill, private_rabbit.start, "kill -9")

"""Pick the transport for a worker process: RabbitMQ when a broker is configured, else embedded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.bus.chores import Chore
from shared.bus.dispatch import Subscription
from shared.settings import Settings


class Worker(Protocol):
    should_stop: bool

    def run(self) -> None: ...


def make_worker(
    settings: Settings, subscriptions: Sequence[Subscription], chores: Sequence[Chore] = ()
) -> Worker:
    if settings.embedded_bus:
        from shared.bus.embedded import EmbeddedBus, EmbeddedWorker

        return EmbeddedWorker(EmbeddedBus(settings), subscriptions, chores)
    from shared.bus.consumer import AmqpWorker

    return AmqpWorker(settings, subscriptions, chores=chores)

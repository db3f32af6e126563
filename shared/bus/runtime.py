"""Pick the transport for a worker process: RabbitMQ when a broker is configured, else embedded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shared.bus.dispatch import Subscription
from shared.settings import Settings


class Worker(Protocol):
    should_stop: bool

    def run(self) -> None: ...


def make_worker(settings: Settings, subscriptions: Sequence[Subscription]) -> Worker:
    if settings.embedded_bus:
        from shared.bus.embedded import EmbeddedBus, EmbeddedWorker

        return EmbeddedWorker(EmbeddedBus(settings), subscriptions)
    from shared.bus.consumer import AmqpWorker

    return AmqpWorker(settings, subscriptions)

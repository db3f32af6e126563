"""The RabbitMQ consumer: a worker process's kombu loop over its subscriptions' queues.

Consuming uses kombu's ConsumerMixin, which owns reconnection; acknowledgement comes only after
the handler's transaction committed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kombu import Connection
from kombu.mixins import ConsumerMixin

from shared import metrics
from shared.backoff import backoff
from shared.bus.connection import declare_topology, kombu_connection, kombu_queues
from shared.bus.dispatch import Outcome, Subscription, dispatch_batch
from shared.settings import Settings

log = logging.getLogger(__name__)


class AmqpWorker(ConsumerMixin):
    """Consumes the subscriptions' queues; acks after commit, requeues or dead-letters otherwise.

    Under load, the messages already delivered (up to the prefetch count) are handled in one
    transaction; when the queue is idle each message is handled as soon as it arrives.
    """

    def __init__(
        self, settings: Settings, subscriptions: Sequence[Subscription], *, batch: int = 50
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.connection = kombu_connection(settings)
        self.batch = max(1, min(batch, settings.prefetch))
        self.handled = 0
        self._pending: dict[str, list[tuple[Any, Any]]] = {}
        self.last_beat = time.monotonic()  # the ops server's liveness (shared/ops.py)
        self._live: Connection | None = None  # the consuming connection (a clone of ours)

    @property
    def broker_connected(self) -> bool:
        """For /readyz, read from another thread: the consuming connection is up."""
        live = self._live
        return live is not None and bool(live.connected)

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        self.last_beat = time.monotonic()  # reconnecting is alive, not stuck
        super().on_connection_error(exc, interval)

    @contextlib.contextmanager
    def establish_connection(self) -> Iterator[Connection]:
        # kombu waits 2, 4, 6 ... up to 30 s between attempts: after a long broker outage the
        # worker would sit idle for up to 30 s with the broker back. Every 1 s, at most 3 s.
        with self.create_connection() as connection:
            connection.ensure_connection(
                self.on_connection_error,
                self.connect_max_retries,
                interval_start=1,
                interval_step=1,
                interval_max=3,
            )
            yield connection

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:  # noqa: N803 (kombu's name)
        specs = [s.queue for s in self.subscriptions]
        declare_topology(self.connection, self.settings, specs, channel=channel)
        return [
            Consumer(
                queues=[kombu_queues(self.settings, sub.queue)[0]],
                callbacks=[functools.partial(self._on_message, sub)],
                on_decode_error=functools.partial(self._on_undecodable, sub.queue.consumer),
                accept=["json"],
                prefetch_count=self.settings.prefetch,
            )
            for sub in self.subscriptions
        ]

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        try:
            super().run(_tokens, **kwargs)
        finally:
            self.connection.release()

    def consume(self, limit=None, timeout=None, safety_interval=1, **kwargs):  # noqa: ARG002
        """kombu's loop, changed to flush the pending batch as soon as no message is waiting."""
        # Forget the previous connection's batch *before* subscribing: messages waiting in a
        # queue arrive while kombu still subscribes the next consumer, and they must stay in
        # the batch (clearing it afterwards dropped them, and the batch's multiple ack then
        # acknowledged them unhandled: lost). Messages of a dead channel come back anyway.
        self._pending = {}
        with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
            self._live = conn
            try:
                while not self.should_stop:
                    self.last_beat = time.monotonic()
                    try:
                        conn.drain_events(timeout=0 if self._has_pending() else safety_interval)
                    except TimeoutError:
                        if self._has_pending():
                            self._flush_all()
                        else:
                            conn.heartbeat_check()
                    yield
            finally:
                # Unacked messages go back to the queue when the channel closes; handle the
                # ones in hand first so that a SIGTERM finishes the work it started.
                self._live = None
                if self._has_pending():
                    self._flush_all()

    def _has_pending(self) -> bool:
        return any(self._pending.values())

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # Not JSON, or not decodable: it will never succeed. (kombu's default acks it: lost.)
        log.error("dead-lettering an undecodable message: %s", exc)
        message.reject(requeue=False)

    def _on_undecodable(self, queue: str, message: Any, exc: Exception) -> None:
        metrics.record_outcome(queue, "dead")
        self.on_decode_error(message, exc)

    def _on_message(self, subscription: Subscription, body: Any, message: Any) -> None:
        pending = self._pending.setdefault(subscription.queue.consumer, [])
        pending.append((body, message))
        if len(pending) >= self.batch or not subscription.batch:
            self._flush(subscription)

    def _flush_all(self) -> None:
        for subscription in self.subscriptions:
            self._flush(subscription)

    def _flush(self, subscription: Subscription) -> None:
        pending = self._pending.pop(subscription.queue.consumer, [])
        if not pending:
            return
        outcomes = dispatch_batch(
            subscription, [body for body, _ in pending], should_stop=lambda: self.should_stop
        )
        if all(outcome is Outcome.ACK for outcome in outcomes) and not self._has_pending():
            # One ack for the batch: 50 single acks sent just before a SIGTERM's channel close
            # were not all applied by the quorum queue (its channel holds settlements back past
            # a window of pending commands), and handled messages came back. ``multiple`` is
            # safe: every message delivered on this channel up to the batch's last is in it.
            self.last_beat = time.monotonic()
            pending[-1][1].ack(multiple=True)
            self.handled += len(pending)
        else:
            for (_, message), outcome in zip(pending, outcomes, strict=True):
                self._settle(message, outcome)
        metrics.record_outcomes(subscription.queue.consumer, outcomes)

    def _settle(self, message: Any, outcome: Outcome) -> None:
        self.last_beat = time.monotonic()
        if outcome is Outcome.ACK:
            message.ack()
            self.handled += 1
        elif outcome is Outcome.DEAD:
            message.reject(requeue=False)
        else:
            deliveries = int((message.headers or {}).get("x-delivery-count", 0))
            if not self.should_stop:
                time.sleep(backoff(deliveries))
            message.requeue()  # the quorum queue counts it; past the limit it goes to the DLQ

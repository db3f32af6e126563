"""The RabbitMQ transport: topology declaration, the confirming publisher, the consumer.

Publishing uses pika's asynchronous connection with a window of unconfirmed messages: one
synchronous confirm per message caps a publisher near a thousand messages a second, a window of
a few hundred in flight goes about ten times faster. Consuming uses kombu's ConsumerMixin, which
owns reconnection; acknowledgement comes only after the handler's transaction committed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import amqp.exceptions
import kombu.exceptions
import pika
from kombu import Connection, Exchange, Queue, binding
from kombu.mixins import ConsumerMixin
from pika.spec import Basic

from shared import metrics
from shared.bus import topology
from shared.bus.dispatch import Outcome, Subscription, backoff, dispatch_batch
from shared.bus.topology import QueueSpec
from shared.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker cannot be reached or dropped the connection."""


# --- topology -----------------------------------------------------------------------------------
def kombu_queues(settings: Settings, spec: QueueSpec) -> tuple[Queue, Queue]:
    """The quorum queue of a spec, bound to each of its events, and its dead-letter queue."""
    namespace = settings.namespace
    events = Exchange(topology.exchange_name(namespace), type="topic", durable=True)
    dead = Exchange(topology.dead_letter_exchange(namespace), type="direct", durable=True)
    name = spec.name(namespace)
    main = Queue(
        name,
        bindings=[binding(events, routing_key=event) for event in spec.events],
        durable=True,
        queue_arguments=topology.queue_arguments(namespace, spec, settings.delivery_limit),
    )
    dlq_name = topology.dlq_name(name)
    dlq = Queue(
        dlq_name,
        exchange=dead,
        routing_key=dlq_name,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )
    return main, dlq


def declare_topology(
    connection: Connection,
    settings: Settings,
    specs: Iterable[QueueSpec] = topology.QUEUES,
    *,
    channel: Any = None,
) -> None:
    """Declare exchanges, queues, bindings and DLQs; idempotent."""
    channel = channel or connection.default_channel
    for spec in specs:
        for queue in kombu_queues(settings, spec):
            queue(channel).declare()


def delete_topology(settings: Settings, specs: Iterable[QueueSpec] = topology.QUEUES) -> None:
    """Remove a namespace's queues, DLQs and exchanges (tests and benchmarks clean up with it)."""
    with kombu_connection(settings) as connection:
        channel = connection.channel()
        for spec in specs:
            name = spec.name(settings.namespace)
            channel.queue_delete(name)
            channel.queue_delete(topology.dlq_name(name))
        channel.exchange_delete(topology.exchange_name(settings.namespace))
        channel.exchange_delete(topology.dead_letter_exchange(settings.namespace))


def kombu_connection(settings: Settings) -> Connection:
    # kombu leaves heartbeats off by default; without them a dead TCP peer goes unnoticed.
    return Connection(settings.broker_url, heartbeat=30, connect_timeout=5)


# --- publishing ---------------------------------------------------------------------------------
class ConfirmingPublisher:
    """Publishes batches with publisher confirms, up to ``window`` messages in flight.

    ``publish`` drives pika's I/O loop until every message of the batch is confirmed, refused or
    the timeout passes, and returns the ids the broker confirmed. Only those may be marked sent.
    """

    def __init__(self, settings: Settings, *, window: int | None = None, timeout: float = 30.0):
        if not settings.broker_url:
            raise ValueError("ConfirmingPublisher needs UPARTNERS_BROKER_URL")
        self._settings = settings
        self._params = pika.URLParameters(settings.broker_url)
        self._params.connection_attempts = 1
        self._params.socket_timeout = 5
        self._exchange = topology.exchange_name(settings.namespace)
        self._window = window or settings.relay_window
        self._timeout = timeout
        self._connection: pika.SelectConnection | None = None
        self._channel: Any = None
        self._ready = False
        self._closing = False
        self._failed: str | None = None
        self._wake_when: Callable[[], bool] | None = None
        self._pending: dict[int, str] = {}
        self._confirmed: list[str] = []
        self._next_tag = 0
        self._feed: Iterable[tuple[str, str, bytes]] = iter(())

    # connection lifecycle
    def _open(self) -> None:
        # Declare every queue before the first publish: an event published before its
        # consumers' queues exist would be routed nowhere and lost.
        try:
            with kombu_connection(self._settings) as connection:
                declare_topology(connection, self._settings)
        except (OSError, kombu.exceptions.KombuError, amqp.exceptions.AMQPError) as exc:
            raise BrokerUnavailable(f"cannot declare the topology: {exc}") from exc
        self._ready, self._failed, self._next_tag = False, None, 0
        self._connection = pika.SelectConnection(
            self._params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=lambda _conn, err: self._fail(f"cannot connect: {err}"),
            on_close_callback=lambda _conn, reason: self._fail(f"connection closed: {reason}"),
        )
        if not self._run_until(lambda: self._ready or self._failed is not None, self._timeout):
            self._fail("timed out opening the connection")
        if not self._ready:
            failure = self._failed
            self.close()
            raise BrokerUnavailable(failure)

    def _on_channel(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(lambda _ch, reason: self._fail(f"channel closed: {reason}"))
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_mode)

    def _on_confirm_mode(self, _frame: Any) -> None:
        self._ready = True
        self._wake()

    def _fail(self, reason: str) -> None:
        if self._failed is None:
            self._failed = reason
        self._ready = False
        self._wake(force=not self._closing)

    def close(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        if connection.is_open:
            connection.close()
            self._run_until(lambda: connection.is_closed, 5.0)
        connection.ioloop.close()  # its wake-up socket pair
        self._connection, self._channel, self._ready = None, None, False
        self._closing = False

    # the I/O loop, run until a condition holds
    def _run_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        if condition():
            return True
        assert self._connection is not None
        ioloop = self._connection.ioloop
        self._wake_when = condition
        timer = ioloop.call_later(timeout, ioloop.stop)
        try:
            ioloop.start()
        finally:
            ioloop.remove_timeout(timer)
            self._wake_when = None
        return condition()

    def _wake(self, force: bool = False) -> None:
        if self._connection is not None and (
            force or (self._wake_when is not None and self._wake_when())
        ):
            self._connection.ioloop.stop()

    # publishing
    def publish(self, messages: Sequence[tuple[str, str, bytes]]) -> list[str]:
        """Publish ``(message_id, routing_key, body)`` triples; return the confirmed ids."""
        if not self._ready:
            self.close()
            self._open()
        self._pending, self._confirmed = {}, []
        self._feed = iter(messages)
        self._fill()
        self._run_until(lambda: not self._pending or self._failed is not None, self._timeout)
        confirmed = self._confirmed
        if self._failed is not None or self._pending:
            reason = self._failed or "timed out waiting for confirms"
            self.close()
            self._ready = False
            if not confirmed:
                raise BrokerUnavailable(reason)
            log.warning("relay batch cut short (%s); %d confirmed", reason, len(confirmed))
        return confirmed

    def _fill(self) -> None:
        while len(self._pending) < self._window and self._ready:
            message = next(self._feed, None)  # type: ignore[call-overload]
            if message is None:
                return
            message_id, routing_key, body = message
            self._channel.basic_publish(
                self._exchange,
                routing_key,
                body,
                properties=pika.BasicProperties(
                    message_id=message_id,
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                ),
            )
            self._next_tag += 1
            self._pending[self._next_tag] = message_id

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = (
            [tag for tag in self._pending if tag <= method.delivery_tag]
            if method.multiple
            else [method.delivery_tag]
        )
        acked = isinstance(method, Basic.Ack)
        for tag in tags:
            message_id = self._pending.pop(tag, None)
            if message_id is not None and acked:
                self._confirmed.append(message_id)
            elif message_id is not None:
                log.warning("broker refused message %s; it stays in the outbox", message_id)
        self._fill()
        self._wake()

    def idle(self, seconds: float) -> None:
        """Sleep while still answering heartbeats."""
        if self._connection is not None and self._ready:
            self._run_until(lambda: self._failed is not None, seconds)
        else:
            time.sleep(seconds)


# --- consuming ----------------------------------------------------------------------------------
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

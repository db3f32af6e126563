"""The RabbitMQ publisher: the relays publish batches with pika and publisher confirms.

Publishing uses pika's asynchronous connection with a window of unconfirmed messages: one
synchronous confirm per message caps a publisher near a thousand messages a second, a window of
a few hundred in flight goes about ten times faster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import amqp.exceptions
import kombu.exceptions
import pika
from pika.spec import Basic

from shared.bus import topology
from shared.bus.connection import declare_topology, kombu_connection
from shared.settings import Settings

log = logging.getLogger(__name__)

# An idle relay runs pika's I/O loop (heartbeats; a connection the broker closed is noticed) for
# one of its sleeps per this many seconds, and simply sleeps otherwise: each start and stop of
# the loop costs about 0.3 ms of CPU (a new epoll, a wake-up through a socket pair), 20 times a
# second per relay. RabbitMQ drops a connection only after two missed heartbeats (60 s each).
IO_EVERY = 1.0


class BrokerUnavailable(Exception):
    """The broker cannot be reached or dropped the connection."""


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
        self._next_io = 0.0  # when ``idle`` runs the I/O loop next (time.monotonic())
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
        """Sleep; at least once every ``IO_EVERY`` seconds, with the I/O loop running meanwhile
        so that heartbeats are answered and a closed connection is noticed (``publish`` runs
        it too, and opens a new connection if it finds this one failed)."""
        now = time.monotonic()
        if self._connection is not None and self._ready and now >= self._next_io:
            self._next_io = now + IO_EVERY
            self._run_until(lambda: self._failed is not None, seconds)
        else:
            time.sleep(seconds)

"""The RabbitMQ consumer: a worker process's kombu loop over its subscriptions' queues.

Consuming uses kombu's ConsumerMixin, which owns reconnection; acknowledgement comes only after
the handler's transaction committed.

A long subscription (``Subscription.long``: an export's build, minutes) is consumed on a channel
of its own with a prefetch of 1, and its message is handled in a helper thread while this
thread goes on reading frames, sending heartbeats and handling the other queues; only this
thread touches the connection, so it also settles the long message once its handler returned.
Its own channel keeps its delivery tag out of the other batches' ``ack(multiple=True)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from kombu import Connection
from kombu import Consumer as KombuConsumer
from kombu.mixins import ConsumerMixin

from shared import metrics
from shared.backoff import backoff
from shared.bus.chores import Chore, Chores
from shared.bus.connection import HEARTBEAT, declare_topology, kombu_connection, kombu_queues
from shared.bus.dispatch import Outcome, Subscription, dispatch_batch
from shared.settings import Settings

log = logging.getLogger(__name__)

JOB_POLL = 0.2  # seconds between two looks at a running long handler (its ack waits that long)
HOLD_FOR = 0.3  # seconds at most that an event waits for the one it is held for (``hold``)


class _Job:
    """A long subscription's message, handled in a helper thread; settled by the consumer's."""

    def __init__(self, subscription: Subscription, message: Any) -> None:
        self.subscription, self.message = subscription, message
        self.outcome = Outcome.RETRY  # until the handler answers
        self.done = threading.Event()


class AmqpWorker(ConsumerMixin):
    """Consumes the subscriptions' queues; acks after commit, requeues or dead-letters otherwise.

    The messages delivered (up to the prefetch count) are handled in one transaction, once no
    more arrive or ``settings.batch_wait`` after the first of them: a transaction costs about
    the same for one event as for twenty, and the relays publish in bursts, so a few
    milliseconds of waiting turn a trickle of one-event transactions into fewer, fuller ones.

    A subscription may also hold an event back for one that will follow it
    (``Subscription.hold``: the cases worker holds a message.received until its
    message.labeled, the labeler's answer): the two are handled in one transaction, not two.
    An event is held for ``HOLD_FOR`` seconds at most, never in a full batch, and only while
    the messages in hand fill less than half the prefetch window, so that the one it waits for
    can still be delivered. Messages handled after a held one are acknowledged once it is
    handled, with one ``multiple`` ack (``_acknowledge``).
    """

    def __init__(
        self,
        settings: Settings,
        subscriptions: Sequence[Subscription],
        *,
        batch: int = 50,
        heartbeat: int = HEARTBEAT,
        long_grace: float = 20.0,
        chores: Sequence[Chore] = (),
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.connection = kombu_connection(settings, heartbeat=heartbeat)
        self.batch = max(1, min(batch, settings.prefetch))
        self.batch_wait = settings.batch_wait
        self._batch_started = 0.0  # when the first message of the pending ones arrived
        # On SIGTERM, how long a long handler in flight may still take (under the 30 s a
        # supervisor waits before SIGKILL); past it, its message goes back to the queue.
        self.long_grace = long_grace
        self.handled = 0
        self.chores = Chores(chores)
        # By queue: (body, message, when it arrived) of the messages not handled yet.
        self._pending: dict[str, list[tuple[Any, Any, float]]] = {}
        self._unacked: list[Any] = []  # handled, their ack waiting for an earlier message's
        self._jobs: list[_Job] = []  # long handlers running, on this connection's channels
        self._stopping = False  # waiting for them at a stop: take no new message
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
        consumers = []
        for sub in self.subscriptions:
            options: dict[str, Any] = {
                "queues": [kombu_queues(self.settings, sub.queue)[0]],
                "callbacks": [functools.partial(self._on_message, sub)],
                "on_decode_error": functools.partial(self._on_undecodable, sub.queue.consumer),
                "accept": ["json"],
            }
            if sub.long:
                # A channel of its own (closed with the connection): its prefetch of 1 holds
                # the queue's next message back while one runs, and its delivery tags are not
                # the main channel's, which the batches acknowledge with ``multiple``.
                own = channel.connection.channel()
                consumers.append(KombuConsumer(own, prefetch_count=1, **options))
            else:
                consumers.append(Consumer(prefetch_count=self.settings.prefetch, **options))
        return consumers

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
        self._pending, self._unacked = {}, []
        # Long handlers of a previous connection run on (threads cannot be stopped), but their
        # channel is gone: their messages come back, and the inbox makes a repeat harmless.
        self._jobs = []
        with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
            self._live = conn
            try:
                while not self.should_stop:
                    self.last_beat = time.monotonic()  # also while a long handler runs
                    self._settle_jobs()
                    self.chores.run_due()
                    if self._has_pending():
                        wait = self._batch_started + self.batch_wait - time.monotonic()
                        if self.batch_wait and wait <= 0:
                            self._flush_all()  # its time is up, even with more arriving
                            continue
                        wait = max(0.0, wait)
                    else:
                        wait = JOB_POLL if self._jobs else safety_interval
                    try:
                        conn.drain_events(timeout=wait)
                    except TimeoutError:
                        if self._has_pending():
                            self._flush_all()
                        # Also while events are held back, which can keep messages in hand
                        # for as long as a trickle lasts.
                        conn.heartbeat_check()
                    else:
                        if self._jobs:
                            conn.heartbeat_check()
                    yield
            finally:
                # Unacked messages go back to the queue when the channel closes; handle the
                # ones in hand first so that a SIGTERM finishes the work it started.
                self._live = None
                if self._has_pending():
                    self._flush_all(hold=False)
                if self._jobs and self.should_stop:
                    self._wait_for_jobs(conn)
                self._jobs = []

    def _wait_for_jobs(self, conn: Connection) -> None:
        """At a stop, give the long handlers in flight up to ``long_grace`` seconds to finish,
        still reading frames and sending heartbeats; what is unfinished then goes back to its
        queue when the connection closes, and is handled again (a long handler must be
        restartable: an export's build is)."""
        self._stopping = True
        deadline = time.monotonic() + self.long_grace
        try:
            while self._jobs and time.monotonic() < deadline:
                self.last_beat = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=JOB_POLL)
                conn.heartbeat_check()
                self._settle_jobs()
        except (*conn.connection_errors, *conn.channel_errors, OSError) as exc:
            log.warning("connection lost while waiting for long handlers: %s", exc)
        finally:
            self._stopping = False
        for job in self._jobs:
            log.warning(
                "stopping with a long handler of %s still running: its message goes back",
                job.subscription.queue.consumer,
            )

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
        if self._stopping:
            return  # unacknowledged, it goes back to its queue when the channel closes
        if subscription.long:
            self._start_job(subscription, body, message)
            return
        if not self._has_pending():
            self._batch_started = time.monotonic()
        pending = self._pending.setdefault(subscription.queue.consumer, [])
        pending.append((body, message, time.monotonic()))
        if len(pending) >= self.batch or not subscription.batch:
            self._flush(subscription)

    def _flush_all(self, *, hold: bool = True) -> None:
        for subscription in self.subscriptions:
            self._flush(subscription, hold=hold)

    def _flush(self, subscription: Subscription, *, hold: bool = True) -> None:
        key = subscription.queue.consumer
        pending = self._pending.pop(key, [])
        if not pending:
            return
        held = self._held_back(subscription, pending) if hold and not self.should_stop else []
        if held:
            self._pending[key] = held
            self._batch_started = time.monotonic()  # look at them again a batch wait later
            kept = {id(entry) for entry in held}
            pending = [entry for entry in pending if id(entry) not in kept]
            if not pending:
                return
        outcomes = dispatch_batch(
            subscription, [body for body, _, _ in pending], should_stop=lambda: self.should_stop
        )
        if all(outcome is Outcome.ACK for outcome in outcomes):
            self.last_beat = time.monotonic()
            self._acknowledge([message for _, message, _ in pending])
            self.handled += len(pending)
        else:
            for (_, message, _), outcome in zip(pending, outcomes, strict=True):
                self._settle(message, outcome)
            self._acknowledge([])  # those an earlier held message kept waiting, if it was here
        metrics.record_outcomes(key, outcomes)

    def _held_back(
        self, subscription: Subscription, pending: list[tuple[Any, Any, float]]
    ) -> list[tuple[Any, Any, float]]:
        """The pending messages that ``subscription.hold`` holds back, for ``HOLD_FOR`` seconds
        at most; none in a full batch or when the messages in hand fill half the window."""
        if subscription.hold is None or len(pending) >= self.batch:
            return []
        in_hand = sum(len(entries) for entries in self._pending.values()) + len(pending)
        if in_hand + len(self._unacked) >= self.settings.prefetch // 2:
            return []
        wanted = subscription.hold([body for body, _, _ in pending])
        now = time.monotonic()
        return [
            entry for i, entry in enumerate(pending) if i in wanted and now - entry[2] < HOLD_FOR
        ]

    def _acknowledge(self, handled: list[Any]) -> None:
        """Acknowledge handled messages with one ``multiple`` ack, up to the last of them that
        was delivered before every message still in hand; the others wait for a later one.

        One ack for a batch: 50 single acks sent just before a SIGTERM's channel close were not
        all applied by the quorum queue (its channel holds settlements back past a window of
        pending commands), and handled messages came back. ``multiple`` acknowledges every
        message delivered on this channel up to the one it names that is not settled yet:
        handled ones, never one still in hand."""
        self._unacked.extend(handled)
        in_hand = [m.delivery_tag for e in self._pending.values() for _, m, _ in e]
        first = min(in_hand, default=None)
        ready = [m for m in self._unacked if first is None or m.delivery_tag < first]
        if ready:
            max(ready, key=lambda m: m.delivery_tag).ack(multiple=True)
            self._unacked = [m for m in self._unacked if m not in ready]

    def _settle(self, message: Any, outcome: Outcome, *, wait: bool = True) -> None:
        self.last_beat = time.monotonic()
        if outcome is Outcome.ACK:
            message.ack()  # this message alone: never ``multiple`` here
            self.handled += 1
        elif outcome is Outcome.DEAD:
            message.reject(requeue=False)
        else:
            if wait:
                self._back_off(message)
            message.requeue()  # the quorum queue counts it; past the limit it goes to the DLQ

    def _back_off(self, message: Any) -> None:
        deliveries = int((message.headers or {}).get("x-delivery-count", 0))
        if not self.should_stop:
            time.sleep(backoff(deliveries))

    # --- long subscriptions -------------------------------------------------------------------
    def _start_job(self, subscription: Subscription, body: Any, message: Any) -> None:
        job = _Job(subscription, message)
        self._jobs.append(job)
        name = f"long-{subscription.queue.consumer}"
        threading.Thread(target=self._run_job, args=(job, body), name=name, daemon=True).start()

    def _run_job(self, job: _Job, body: Any) -> None:
        """In the helper thread: the handler and its transaction, nothing of the connection."""
        try:
            job.outcome = dispatch_batch(
                job.subscription, [body], should_stop=lambda: self.should_stop
            )[0]
            if job.outcome is Outcome.RETRY:
                self._back_off(job.message)  # here, not in the thread that keeps the heartbeat
        except BaseException:
            log.exception("long handler of %s failed", job.subscription.queue.consumer)
            job.outcome = Outcome.RETRY
        finally:
            job.done.set()

    def _settle_jobs(self) -> None:
        """In the consuming thread: acknowledge (or requeue) the long handlers that returned."""
        for job in [job for job in self._jobs if job.done.is_set()]:
            self._jobs.remove(job)
            self._settle(job.message, job.outcome, wait=False)
            metrics.record_outcomes(job.subscription.queue.consumer, [job.outcome])

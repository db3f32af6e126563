"""Transport-independent consumption: one received body in, one outcome out.

The RabbitMQ consumer and the embedded bus both call ``dispatch`` and act on its answer:
ACK (done, or already done before), RETRY (try again later), DEAD (can never succeed).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exc as sa_exc

from shared.backoff import backoff
from shared.bus.topology import QueueSpec
from shared.events import BadEvent, Envelope, read_event
from shared.logs import log_context
from shared.uow import ServiceStore, UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope], None]


class TransientError(Exception):
    """The world outside failed (database down, flow engine 5xx): the same event may work later."""


class PermanentError(Exception):
    """The event can never be handled: dead-letter it at once."""


# Infrastructure failures: wait and try the same message again without counting a delivery.
TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, TransientError)


class Outcome(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Subscription:
    queue: QueueSpec
    store: ServiceStore
    handlers: Mapping[str, Handler]
    # Handlers that call the outside world (the flow engine) must not share a transaction:
    # a failure later in a batch would roll back, and so repeat, calls already made.
    batch: bool = True
    # Called with a batch's new events before their handlers run one by one, in the same
    # transaction: reads what they will look up (rows by id) in one query per kind.
    prepare: Callable[[UnitOfWork, list[Envelope]], None] | None = None
    # By event name: true for an event's data when its handler would do nothing with it. Such
    # events are acknowledged without a transaction (nothing to record: a repeat does nothing
    # either), e.g. the many message.labeled that flowbridge has nothing to mirror of.
    skip: Mapping[str, Callable[[Mapping[str, Any]], bool]] = field(default_factory=dict)
    # Handlers that may run for minutes (an export's build): on RabbitMQ each message is handled
    # alone in a helper thread, one at a time, while the consuming thread keeps the connection
    # alive (shared/bus/consumer.py). The embedded bus handles it as any other.
    long: bool = False
    # Given the bodies of the messages in hand, the indexes of those worth holding back a
    # moment for one that will follow (the cases worker: a message.received until its
    # message.labeled), so that both are handled in one transaction. On RabbitMQ only: see
    # shared/bus/consumer.py for how long and when. The bodies are as delivered: any JSON.
    hold: Callable[[Sequence[Any]], set[int]] | None = None

    def skips(self, envelope: Envelope) -> bool:
        predicate = self.skip.get(envelope.name)
        return predicate is not None and predicate(envelope.data)


def dispatch(
    subscription: Subscription,
    body: Any,
    *,
    in_place_budget: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> Outcome:
    try:
        envelope = read_event(body)
    except BadEvent as exc:
        log.error("dead-lettering a bad event on %s: %s", subscription.queue.consumer, exc)
        return Outcome.DEAD
    handler = subscription.handlers.get(envelope.name)
    if handler is None:
        log.error("no handler for %s on %s", envelope.name, subscription.queue.consumer)
        return Outcome.DEAD
    if subscription.skips(envelope):
        return Outcome.ACK
    with _context_of(envelope):
        return _handle_with_retries(
            subscription, handler, envelope, in_place_budget, sleep, should_stop
        )


def _context_of(envelope: Envelope):
    """Log records while handling an event carry its correlation id, id and name."""
    return log_context(
        correlation_id=envelope.correlation_id, event_id=envelope.id, event=envelope.name
    )


def _handle_with_retries(
    subscription: Subscription,
    handler: Handler,
    envelope: Envelope,
    in_place_budget: float,
    sleep: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> Outcome:
    deadline = time.monotonic() + in_place_budget
    attempt = 0
    while True:
        try:
            outcome = _handle_once(subscription, handler, envelope)
            consumer = subscription.queue.consumer
            log.debug("handled %s %s on %s", envelope.name, envelope.id, consumer)
            return outcome
        except PermanentError as exc:
            log.error("dead-lettering %s %s: %s", envelope.name, envelope.id, exc)
            return Outcome.DEAD
        except TRANSIENT as exc:
            # The message is fine, the world is not: hold it (prefetch keeps the rest waiting)
            # rather than burn its deliveries, within a budget under the heartbeat timeout.
            wait = backoff(attempt)
            if should_stop() or time.monotonic() + wait > deadline:
                log.warning(
                    "giving %s %s back after transient failures: %s",
                    envelope.name,
                    envelope.id,
                    _short(exc),
                )
                return Outcome.RETRY
            log.warning(
                "transient failure on %s %s, retrying in %.1fs: %s",
                envelope.name,
                envelope.id,
                wait,
                _short(exc),
            )
            sleep(wait)
            attempt += 1
        except Exception:
            log.exception("handler failed on %s %s", envelope.name, envelope.id)
            return Outcome.RETRY


def dispatch_batch(subscription: Subscription, bodies: list[Any], **options: Any) -> list[Outcome]:
    """Handle several events in one transaction (one commit instead of one each).

    Any failure inside the batch rolls it all back and falls back to ``dispatch`` one event at
    a time, so a poison event or a transient failure is treated exactly as alone.
    """
    if len(bodies) == 1 or not subscription.batch:
        return [dispatch(subscription, body, **options) for body in bodies]
    consumer = subscription.queue.consumer
    try:
        envelopes = [read_event(body) for body in bodies]
        handlers = [subscription.handlers[envelope.name] for envelope in envelopes]
        work = [
            (envelope, handler)
            for envelope, handler in zip(envelopes, handlers, strict=True)
            if not subscription.skips(envelope)
        ]
        if work:
            with subscription.store.unit_of_work() as uow:
                fresh = uow.claim(consumer, [envelope.id for envelope, _ in work])
                if subscription.prepare is not None:
                    subscription.prepare(uow, [e for e, _ in work if e.id in fresh])
                for envelope, handler in work:
                    if envelope.id not in fresh:
                        continue  # already handled, or twice in this batch
                    fresh.discard(envelope.id)
                    uow.cause, uow.correlation_id = envelope, envelope.correlation_id
                    with _context_of(envelope):
                        handler(uow, envelope)
                uow.commit()
        if log.isEnabledFor(logging.DEBUG):
            for envelope in envelopes:
                with _context_of(envelope):
                    log.debug("handled %s %s on %s", envelope.name, envelope.id, consumer)
        return [Outcome.ACK] * len(bodies)
    except Exception as exc:  # noqa: BLE001 (each event gets its own verdict below)
        log.info(
            "batch of %d on %s failed (%s); handling one by one", len(bodies), consumer, _short(exc)
        )
        return [dispatch(subscription, body, **options) for body in bodies]


def _handle_once(subscription: Subscription, handler: Handler, envelope: Envelope) -> Outcome:
    # The inbox row is written at the commit, not claimed first as a batch does: a handler of an
    # unbatched subscription may commit steps of its own (flowbridge saves its progress around
    # each call to the flow engine), and a claimed row would be committed with the first step.
    consumer = subscription.queue.consumer
    try:
        with subscription.store.unit_of_work(cause=envelope) as uow:
            if uow.already_processed(consumer, envelope.id):
                return Outcome.ACK
            uow.mark_processed(consumer, envelope.id)
            handler(uow, envelope)
            uow.commit()
    except sa_exc.IntegrityError:
        # Another replica handled the same event at the same moment: its inbox row won.
        with subscription.store.unit_of_work(cause=envelope) as uow:
            if uow.already_processed(consumer, envelope.id):
                return Outcome.ACK
        raise
    return Outcome.ACK


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__

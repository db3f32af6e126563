"""Dead-letter queues: see what died and why, replay it to its consumer, or purge it.

Both transports keep one dead-letter queue per consumer queue, ``<queue>.dlq``. On RabbitMQ the
quorum queue moves a message there after its delivery limit, or at once when a consumer rejects
it; on the embedded bus the same row moves to the queue ``<queue>.dlq``.

What is printed is limited to ids and names (event, event id, org, correlation id, when and why
it died): a message's text may be sensitive, so a body is never shown.

A replay sends each message back to its own queue only (the default exchange, routing key = the
queue's name), not to the events exchange, where every other consumer of the event would see it
again. On RabbitMQ each dead message is acknowledged only after its republish is confirmed, so
an interrupted replay loses nothing; a message republished but not yet acknowledged comes back
to the DLQ as well, and the consumer's inbox absorbs that duplicate.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from shared.bus import topology
from shared.bus.topology import QueueSpec
from shared.settings import Settings


class UnknownQueue(LookupError):
    """No consumer queue has that name."""


class DeadLetterError(RuntimeError):
    """The dead letters cannot be reached (broker down, queue not declared, no bus file)."""


@dataclass(frozen=True)
class DeadLetter:
    """What may be shown of one dead message: ids and names, never its text."""

    event: str
    event_id: str
    org: str
    correlation_id: str
    died_at: datetime | None = None
    reason: str | None = None
    deaths: int | None = None  # RabbitMQ: times it was dead-lettered from its queue
    deliveries: int | None = None  # embedded bus: deliveries before it died


@dataclass(frozen=True)
class DlqState:
    spec: QueueSpec
    depth: int | None  # None: the DLQ does not exist (yet) on the broker
    dead: tuple[DeadLetter, ...] = ()


class DeadLetters(Protocol):
    def depth(self, spec: QueueSpec) -> int | None: ...
    def peek(self, spec: QueueSpec, count: int) -> list[DeadLetter]: ...
    def replay(self, spec: QueueSpec, limit: int | None = None) -> int: ...
    def purge(self, spec: QueueSpec) -> int: ...
    def close(self) -> None: ...


# --- pure helpers -------------------------------------------------------------------------------
def find_queue(
    name: str, namespace: str, specs: Sequence[QueueSpec] = topology.QUEUES
) -> QueueSpec:
    """The queue spec named ``labeler.messages`` or ``<namespace>.labeler.messages``."""
    short = name.removeprefix(f"{namespace}.").removesuffix(".dlq")
    for spec in specs:
        if spec.consumer == short:
            return spec
    known = ", ".join(spec.consumer for spec in specs)
    raise UnknownQueue(f"no queue {name!r}; the queues are: {known}")


_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PHONE_LIKE = re.compile(r"\d{8}")


def _safe(value: Any) -> str:
    """An id (a UUID) or a name (an org key, an event name) as received, or '?' for anything
    else: a malformed body may carry free text or a phone number in any field."""
    if not isinstance(value, str):
        return "?"
    if _UUID.fullmatch(value):
        return value
    return value if _NAME.fullmatch(value) and not _PHONE_LIKE.search(value) else "?"


def describe(body: bytes | str, *, message_id: str | None = None, **death: Any) -> DeadLetter:
    """The shown fields of a dead message; tolerant of bodies that are not events at all."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        envelope = None
    if not isinstance(envelope, dict):
        envelope = {}
    return DeadLetter(
        event=_safe(envelope.get("name")) if envelope else "(not an event)",
        event_id=_safe(envelope.get("id") or message_id),
        org=_safe(envelope.get("org")),
        correlation_id=_safe(envelope.get("correlation_id")),
        **death,
    )


def amqp_death(headers: dict[str, Any] | None) -> dict[str, Any]:
    """When, why and how often RabbitMQ dead-lettered a message, from its x-death headers
    (their first entry is the latest death; ``count`` the deaths from that queue so far)."""
    headers = headers or {}
    deaths = headers.get("x-death") or []
    first = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    reason = first.get("reason") or headers.get("x-first-death-reason")  # the latest death
    died_at = first.get("time") if isinstance(first.get("time"), datetime) else None
    count = first.get("count")
    return {
        "died_at": died_at,
        "reason": str(reason) if reason else None,
        "deaths": int(count) if count is not None else None,
    }


def replay_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """Headers for the republished copy: the death history stays (a second death counts 2),
    the DLQ's own delivery count goes (the main queue keeps its own)."""
    return {k: v for k, v in (headers or {}).items() if k != "x-delivery-count"}


def format_letter(letter: DeadLetter) -> str:
    died = letter.died_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if letter.died_at else "?"
    why = [letter.reason or "unknown reason"]
    if letter.deaths is not None:
        why.append(f"{letter.deaths}x")
    if letter.deliveries is not None:
        why.append(f"after {letter.deliveries} deliveries")
    return (
        f"  {letter.event} {letter.event_id} org={letter.org} "
        f"correlation={letter.correlation_id} died {died} ({', '.join(why)})"
    )


def format_listing(states: Iterable[DlqState]) -> str:
    lines, missing = [f"{'queue':<24} {'dead':>6}"], False
    for state in states:
        depth = "-" if state.depth is None else str(state.depth)
        lines.append(f"{state.spec.consumer:<24} {depth:>6}")
        lines += [format_letter(letter) for letter in state.dead]
        if state.depth is not None and state.depth > len(state.dead) and state.dead:
            lines.append(f"  ... and {state.depth - len(state.dead)} more")
        missing = missing or state.depth is None
    if missing:
        lines.append("(-: not declared on the broker yet; upartners broker setup declares it)")
    return "\n".join(lines)


def status(letters: DeadLetters, specs: Sequence[QueueSpec], show: int = 0) -> list[DlqState]:
    states = []
    for spec in specs:
        depth = letters.depth(spec)
        dead = tuple(letters.peek(spec, show)) if show > 0 and depth else ()
        states.append(DlqState(spec, depth, dead))
    return states


# --- the embedded bus ---------------------------------------------------------------------------
class EmbeddedDeadLetters:
    """The dead rows of the embedded bus's SQLite file."""

    def __init__(self, settings: Settings) -> None:
        from shared.bus.embedded import EmbeddedBus

        # EmbeddedBus keeps its queues in <data dir>/bus.db; do not create one by looking.
        if not Path(settings.data_dir, "bus.db").exists():
            raise DeadLetterError(
                f"no embedded bus in {settings.data_dir}/ (set UPARTNERS_DATA_DIR, or "
                "UPARTNERS_BROKER_URL for RabbitMQ)"
            )
        self.namespace = settings.namespace
        self.limit = settings.delivery_limit
        self.bus = EmbeddedBus(settings)

    def depth(self, spec: QueueSpec) -> int:
        return self.bus.depth(topology.dlq_name(spec.name(self.namespace)))

    def peek(self, spec: QueueSpec, count: int) -> list[DeadLetter]:
        return [
            describe(
                body,
                message_id=message_id,
                died_at=datetime.fromtimestamp(died, UTC),
                # The bus does not record why; the count tells a rejection from the limit.
                reason="delivery_limit" if deliveries >= self.limit else "rejected",
                deliveries=deliveries,
            )
            for message_id, body, deliveries, died in self.bus.dead_letters(
                spec.name(self.namespace), count
            )
        ]

    def replay(self, spec: QueueSpec, limit: int | None = None) -> int:
        return self.bus.replay_dead(spec.name(self.namespace), limit)

    def purge(self, spec: QueueSpec) -> int:
        return self.bus.purge_dead(spec.name(self.namespace))

    def close(self) -> None:
        self.bus.close()


# --- RabbitMQ -----------------------------------------------------------------------------------
class AmqpDeadLetters:
    """The DLQs on RabbitMQ, through one blocking pika connection."""

    def __init__(self, settings: Settings) -> None:
        import pika
        import pika.exceptions

        self._pika = pika
        self.namespace = settings.namespace
        params = pika.URLParameters(settings.broker_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        try:
            self.connection = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as exc:
            raise DeadLetterError(f"cannot reach the broker: {exc!r}") from exc

    def _names(self, spec: QueueSpec) -> tuple[str, str]:
        queue = spec.name(self.namespace)
        return queue, topology.dlq_name(queue)

    def _count(self, queue: str) -> int | None:
        """Ready messages of a queue, None if it is not declared (the 404 closes a channel)."""
        import pika.exceptions

        channel = self.connection.channel()
        try:
            return channel.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise
        finally:
            if channel.is_open:
                channel.close()

    def depth(self, spec: QueueSpec) -> int | None:
        return self._count(self._names(spec)[1])

    def peek(self, spec: QueueSpec, count: int) -> list[DeadLetter]:
        """Take up to ``count`` without acknowledging, then give them all back at once (taking
        one back before the next get would only see the same message again)."""
        dlq = self._names(spec)[1]
        channel = self.connection.channel()
        letters = []
        try:
            for _ in range(count):
                method, properties, body = channel.basic_get(dlq, auto_ack=False)
                if method is None:
                    break
                death = amqp_death(properties.headers)
                letters.append(describe(body, message_id=properties.message_id, **death))
            if letters:
                channel.basic_nack(0, multiple=True, requeue=True)
        finally:
            if channel.is_open:
                channel.close()  # and anything still unacknowledged goes back too
        return letters

    def replay(self, spec: QueueSpec, limit: int | None = None) -> int:
        queue, dlq = self._names(spec)
        present = self._count(dlq)
        if present is None or self._count(queue) is None:
            raise DeadLetterError(f"{queue} is not declared (run: upartners broker setup)")
        budget = present if limit is None else min(limit, present)
        channel = self.connection.channel()
        channel.confirm_delivery()  # basic_publish now waits for the broker's confirm
        moved = 0
        try:
            while moved < budget:
                method, properties, body = channel.basic_get(dlq, auto_ack=False)
                if method is None:
                    break
                republished = copy.copy(properties)
                republished.headers = replay_headers(properties.headers)
                republished.delivery_mode = self._pika.DeliveryMode.Persistent.value
                # mandatory: an unroutable publish raises instead of vanishing
                channel.basic_publish("", queue, body, properties=republished, mandatory=True)
                channel.basic_ack(method.delivery_tag)
                moved += 1
        finally:
            if channel.is_open:
                channel.close()
        return moved

    def purge(self, spec: QueueSpec) -> int:
        dlq = self._names(spec)[1]
        if self._count(dlq) is None:
            return 0
        channel = self.connection.channel()
        try:
            return channel.queue_purge(dlq).method.message_count
        finally:
            channel.close()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def open_dead_letters(settings: Settings) -> DeadLetters:
    """The DLQs of the configured transport: RabbitMQ if a broker is set, else the bus file."""
    if settings.embedded_bus:
        return EmbeddedDeadLetters(settings)
    return AmqpDeadLetters(settings)


# --- the command: upartners dlq list | replay | purge --------------------------------------------
def command(
    settings: Settings,
    action: str,
    *,
    queue: str | None = None,
    show: int = 0,
    limit: int | None = None,
    yes: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Exit status: 0 done, 1 refused or failed, 2 no such queue."""
    import pika.exceptions

    out, err = out or sys.stdout, err or sys.stderr

    try:
        spec = find_queue(queue, settings.namespace) if action != "list" else None
    except UnknownQueue as exc:
        print(exc.args[0], file=err)
        return 2
    try:
        letters = open_dead_letters(settings)
    except DeadLetterError as exc:
        print(exc, file=err)
        return 1
    try:
        if spec is None:
            print(format_listing(status(letters, topology.QUEUES, show)), file=out)
        elif action == "replay":
            moved = letters.replay(spec, limit)
            print(f"{spec.consumer}: {moved} dead messages replayed to their queue", file=out)
        elif not yes:
            depth = letters.depth(spec) or 0
            print(f"{spec.consumer}: would delete {depth} dead messages; add --yes", file=err)
            return 1
        else:
            purged = letters.purge(spec)
            print(f"{spec.consumer}: {purged} dead messages deleted", file=out)
    except (DeadLetterError, pika.exceptions.AMQPError) as exc:
        print(f"{action} failed: {exc!r}", file=err)
        return 1
    finally:
        letters.close()
    return 0

"""RabbitMQ topology in one place: the events exchange, every queue, its bindings and its DLQ.

The embedded bus routes with the same table, so both transports deliver the same events to the
same queues.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared import events as ev

# Events go out under their name as routing key, but one: a message.labeled carrying a label
# synced with the flow engine (``ev.may_mirror_labels``) goes out as message.labeled.synced, the
# only one flowbridge's mirror queue binds. Most labelled messages carry no synced label, and each
# was a quorum-queue delivery, a read and an ack for nothing there (bench/pipeline.py).
MESSAGE_LABELED_SYNCED = f"{ev.MESSAGE_LABELED}.synced"


def routing_key(name: str, data: Mapping[str, Any] | None) -> str:
    """The routing key an event of this name and data is published under (data that is not an
    object goes out under the name: its consumers dead-letter it)."""
    if name == ev.MESSAGE_LABELED and isinstance(data, Mapping) and ev.may_mirror_labels(data):
        return MESSAGE_LABELED_SYNCED
    return name


@dataclass(frozen=True)
class QueueSpec:
    """One durable quorum queue per (consuming service, purpose)."""

    service: str
    purpose: str
    events: tuple[str, ...]
    # The routing keys bound (none: the events' names), and those earlier versions bound that
    # the declaration removes (RabbitMQ keeps a binding until it is removed).
    keys: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()

    @property
    def bindings(self) -> tuple[str, ...]:
        return self.keys or self.events

    @property
    def consumer(self) -> str:
        """The name this queue's consumer records in its service's inbox."""
        return f"{self.service}.{self.purpose}"

    def name(self, namespace: str) -> str:
        return f"{namespace}.{self.consumer}"


LABEL_EVENTS = (ev.LABEL_CREATED, ev.LABEL_UPDATED, ev.LABEL_DELETED)

LABELER_MESSAGES = QueueSpec("labeler", "messages", (ev.MESSAGE_RECEIVED,))
LABELER_LABELS = QueueSpec("labeler", "labels", LABEL_EVENTS)

CASES_MESSAGES = QueueSpec(
    "cases",
    "messages",
    (ev.MESSAGE_RECEIVED, ev.MESSAGE_LABELED),
    keys=(ev.MESSAGE_RECEIVED, ev.MESSAGE_LABELED, MESSAGE_LABELED_SYNCED),
)
CASES_DELIVERY = QueueSpec(
    "cases",
    "flowbridge",
    (
        ev.OUTGOING_SENT,
        ev.OUTGOING_FAILED,
        ev.CONTACT_SUSPENDED,
        ev.CONTACT_RESTORED,
        ev.FOLLOWUP_STARTED,
        ev.CATALOG_SYNCED,
    ),
)
# Its own queue: building a file takes seconds to minutes and must not hold up messages.
CASES_EXPORTS = QueueSpec("cases", "exports", (ev.EXPORT_REQUESTED,))

FLOWBRIDGE_CASES = QueueSpec(
    "flowbridge", "cases", (ev.CASE_OPENED, ev.CASE_REOPENED, ev.CASE_CLOSED)
)
FLOWBRIDGE_OUTGOING = QueueSpec("flowbridge", "outgoing", (ev.OUTGOING_REQUESTED,))
FLOWBRIDGE_MIRROR = QueueSpec(
    "flowbridge",
    "mirror",
    (ev.MESSAGE_LABELED, ev.MESSAGE_ARCHIVED, ev.MESSAGE_RESTORED),
    keys=(MESSAGE_LABELED_SYNCED, ev.MESSAGE_ARCHIVED, ev.MESSAGE_RESTORED),
    retired=(ev.MESSAGE_LABELED,),  # every message.labeled, before 2026-12
)
FLOWBRIDGE_ORGS = QueueSpec("flowbridge", "orgs", (ev.ORG_UPDATED, *LABEL_EVENTS))

QUEUES: tuple[QueueSpec, ...] = (
    LABELER_MESSAGES,
    LABELER_LABELS,
    CASES_MESSAGES,
    CASES_DELIVERY,
    CASES_EXPORTS,
    FLOWBRIDGE_CASES,
    FLOWBRIDGE_OUTGOING,
    FLOWBRIDGE_MIRROR,
    FLOWBRIDGE_ORGS,
)


def exchange_name(namespace: str) -> str:
    return f"{namespace}.events"


def dead_letter_exchange(namespace: str) -> str:
    return f"{namespace}.dead"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def queue_arguments(namespace: str, queue: QueueSpec, delivery_limit: int) -> dict[str, object]:
    # RabbitMQ 3.10's quorum queues have no default delivery limit: without one a poison
    # message would be redelivered forever.
    name = queue.name(namespace)
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": dead_letter_exchange(namespace),
        "x-dead-letter-routing-key": dlq_name(name),
    }


def routes(key: str, queues: tuple[QueueSpec, ...] = QUEUES) -> list[QueueSpec]:
    """The queues a routing key reaches. Bindings are exact keys (no wildcards)."""
    return [queue for queue in queues if key in queue.bindings]

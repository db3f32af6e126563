"""Connecting to RabbitMQ with kombu, and declaring on it the topology of ``topology.py``.

The publisher and the consumer both declare every exchange, queue, binding and dead-letter queue
they need before they use it; tests and benchmarks delete a namespace's topology with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kombu import Connection, Exchange, Queue, binding

from shared.bus import topology
from shared.bus.topology import QueueSpec
from shared.settings import Settings


def kombu_queues(settings: Settings, spec: QueueSpec) -> tuple[Queue, Queue]:
    """The quorum queue of a spec, bound to each of its events, and its dead-letter queue."""
    namespace = settings.namespace
    events = Exchange(topology.exchange_name(namespace), type="topic", durable=True)
    dead = Exchange(topology.dead_letter_exchange(namespace), type="direct", durable=True)
    name = spec.name(namespace)
    main = Queue(
        name,
        bindings=[binding(events, routing_key=key) for key in spec.bindings],
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
    exchange = topology.exchange_name(settings.namespace)
    for spec in specs:
        for queue in kombu_queues(settings, spec):
            queue(channel).declare()
        for key in spec.retired:  # removing a binding that is not there is no error
            channel.queue_unbind(spec.name(settings.namespace), exchange, key)


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


# Seconds between heartbeats; the broker (and py-amqp) drop a connection silent for two of them.
HEARTBEAT = 30


def kombu_connection(settings: Settings, *, heartbeat: int = HEARTBEAT) -> Connection:
    # kombu leaves heartbeats off by default; without them a dead TCP peer goes unnoticed.
    return Connection(settings.broker_url, heartbeat=heartbeat, connect_timeout=5)

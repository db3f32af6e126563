"""The event bus: topology, dispatching to handlers, and the two transports (RabbitMQ, embedded)."""

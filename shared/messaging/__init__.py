"""Messaging over RabbitMQ: envelope, outbox and relay, inbox and consumer (architecture.md).

pika is used here and nowhere else. Import the pieces from their modules, e.g.
``from shared.messaging.outbox import Outbox, OutboxMixin``.
"""

from .envelope import CONTENT_TYPE, CloudEventSchema, InvalidMessage, decode, encode, make_event
from .inbox import InboxMixin, claim
from .outbox import Outbox, OutboxMixin
from .topology import DLX, EXCHANGE, QueueSpec, declare_exchanges, declare_queue

__all__ = [
    "CONTENT_TYPE",
    "DLX",
    "EXCHANGE",
    "CloudEventSchema",
    "InboxMixin",
    "InvalidMessage",
    "Outbox",
    "OutboxMixin",
    "QueueSpec",
    "claim",
    "declare_exchanges",
    "declare_queue",
    "decode",
    "encode",
    "make_event",
]

"""The broker topology (architecture.md, rule 3), declared idempotently at start and on reconnect.

- ``refstd.events``: the durable topic exchange every event is published to (routing key = type).
- ``refstd.dlx``: a durable direct exchange for dead letters; each work queue dead-letters to it
  with its own name as routing key, and ``<queue>.dlq`` is bound there.
- per consumer: a durable quorum queue ``<queue>`` bound by routing-key patterns, its dead-letter
  queue ``<queue>.dlq``, and one delay queue per retry tier ``<queue>.retry.<ms>`` whose
  queue-level TTL dead-letters the message back to ``<queue>`` through the default exchange.

All queues are quorum queues with at-least-once dead-lettering (which RabbitMQ requires to be
paired with ``overflow: reject-publish``); quorum dead-lettering is at-most-once otherwise.

A queue with ``max_length`` (e.g. an audit trail nobody has to consume) is bounded and lossy by
design: past that many messages the broker drops the oldest (``x-overflow: drop-head``), and it
does not dead-letter (overflow would otherwise fill the unbounded DLQ instead).

Queue arguments are fixed at declaration: RabbitMQ refuses a redeclaration with different
arguments (``PRECONDITION_FAILED``), so changing a tier or the delivery limit of an existing queue
means deleting the queue (or moving the setting to a policy) first.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

EXCHANGE = "refstd.events"
EXCHANGE_TYPE = "topic"
DLX = "refstd.dlx"
DLX_TYPE = "direct"

#: The exchanges and their types, in declaration order.
EXCHANGES: tuple[tuple[str, str], ...] = ((EXCHANGE, EXCHANGE_TYPE), (DLX, DLX_TYPE))

_QUORUM = {
    "x-queue-type": "quorum",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class QueueSpec:
    """One consumer's queue: its name (``<service>.<purpose>``) and the patterns it is bound by.

    ``retry_delays_ms`` are the delay tiers a failed message goes through before the DLQ;
    ``prefetch`` is the consumer's unacknowledged-message window; ``delivery_limit`` is the quorum
    queue's redelivery limit (a message redelivered that often, e.g. because it crashes the
    process, is dead-lettered to the DLQ instead of looping forever); None for no limit;
    ``max_length`` bounds the queue, dropping the oldest messages past it (no dead-lettering).
    """

    name: str
    bindings: list[str]
    retry_delays_ms: tuple = (1000, 10000, 60000)
    prefetch: int = 50
    delivery_limit: int | None = field(default=20)
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("queue name is required")
        if isinstance(self.bindings, str):
            raise TypeError("bindings must be a list of routing-key patterns, not a string")
        delays = tuple(int(d) for d in self.retry_delays_ms)
        if any(d <= 0 for d in delays):
            raise ValueError("retry delays must be positive")
        object.__setattr__(self, "retry_delays_ms", delays)
        if self.prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be at least 1")

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.name}.retry.{int(delay_ms)}"

    @property
    def retry_queues(self) -> list[str]:
        return [self.retry_queue(d) for d in self.retry_delays_ms]

    def work_queue_arguments(self) -> dict[str, Any]:
        if self.max_length is not None:
            # Bounded: the oldest go first; at-least-once dead-lettering needs reject-publish, which
            # would block the publishers of a queue nobody consumes.
            args: dict[str, Any] = {"x-queue-type": "quorum", "x-max-length": int(self.max_length),
                                    "x-overflow": "drop-head"}
            if self.delivery_limit is not None:
                args["x-delivery-limit"] = int(self.delivery_limit)
            return args
        args = {
            **_QUORUM,
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": self.name,
        }
        if self.delivery_limit is not None:
            args["x-delivery-limit"] = int(self.delivery_limit)
        return args

    def retry_queue_arguments(self, delay_ms: int) -> dict[str, Any]:
        return {
            **_QUORUM,
            "x-message-ttl": int(delay_ms),
            # The default exchange routes by queue name: straight back to the work queue.
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.name,
        }


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words.

    Linear in (pattern words x key words), so patterns given by API clients (``#.#.#...``) cannot make
    it explode.
    """
    words = routing_key.split(".")
    # reach[j]: the pattern words seen so far match the first j words of the key.
    reach = [True] + [False] * len(words)
    for part in pattern.split("."):
        if part == "#":
            reach = list(accumulate(reach, operator.or_))  # '#' also takes every later word
        else:
            reach = [False] + [reach[j] and part in ("*", word) for j, word in enumerate(words)]
    return reach[-1]


def declare_exchanges(channel) -> None:
    """Declare the event exchange and the dead-letter exchange (a blocking channel)."""
    for name, kind in EXCHANGES:
        channel.exchange_declare(exchange=name, exchange_type=kind, durable=True)


def declare_queue(channel, spec: QueueSpec) -> None:
    """Declare one consumer's queues and bindings (a blocking channel); safe to repeat."""
    declare_exchanges(channel)
    channel.queue_declare(queue=spec.dlq, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(queue=spec.dlq, exchange=DLX, routing_key=spec.name)
    channel.queue_declare(queue=spec.name, durable=True, arguments=spec.work_queue_arguments())
    for pattern in spec.bindings:
        channel.queue_bind(queue=spec.name, exchange=EXCHANGE, routing_key=pattern)
    for delay in spec.retry_delays_ms:
        channel.queue_declare(queue=spec.retry_queue(delay), durable=True, arguments=spec.retry_queue_arguments(delay))


def declare_topology(amqp_url: str, specs) -> None:
    """Declare the exchanges and every queue in ``specs`` once, on a short-lived connection.

    Workers call this at start with the system's whole queue registry, so that an event published
    before its consumer first ran waits in that consumer's queue instead of being unroutable.
    """
    from .connection import connect

    connection = connect(amqp_url, name="topology")
    try:
        channel = connection.channel()
        declare_exchanges(channel)
        for spec in specs:
            declare_queue(channel, spec)
    finally:
        connection.close()

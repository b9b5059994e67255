"""A bounded queue (QueueSpec.max_length): the broker keeps the newest messages and drops the oldest."""

from __future__ import annotations

import pytest

from services.topology import ALL_QUEUES, NOTIFIER_AUDIT
from shared.messaging.topology import DLX, QueueSpec, declare_queue

from .support import unique


def test_a_bounded_spec_asks_for_drop_head_and_no_dead_lettering():
    spec = QueueSpec("audit.q", ["a.#"], retry_delays_ms=(), max_length=5)
    assert spec.work_queue_arguments() == {"x-queue-type": "quorum", "x-max-length": 5, "x-overflow": "drop-head",
                                           "x-delivery-limit": 20}
    assert spec.retry_queues == []
    unbounded = QueueSpec("work.q", ["a.#"]).work_queue_arguments()
    assert unbounded["x-overflow"] == "reject-publish" and unbounded["x-dead-letter-exchange"] == DLX
    assert "x-max-length" not in unbounded


@pytest.mark.parametrize("max_length", [0, -1])
def test_a_bound_must_be_positive(max_length):
    with pytest.raises(ValueError):
        QueueSpec("q", ["a.b"], max_length=max_length)


def test_the_notifiers_own_events_have_a_bounded_queue():
    assert NOTIFIER_AUDIT in ALL_QUEUES
    assert NOTIFIER_AUDIT.bindings == ["refstd.notifier.#"]
    assert NOTIFIER_AUDIT.max_length == 100_000


def test_the_broker_keeps_the_newest_and_drops_the_oldest(broker):
    event_type = unique("refstd.test.audit") + ".recorded"
    spec = QueueSpec(unique("test.bounded"), [event_type], retry_delays_ms=(), max_length=5)
    broker.own(spec)
    declare_queue(broker.ch(), spec)
    declare_queue(broker.ch(), spec)  # idempotent: the same arguments again
    broker.ch().confirm_delivery()  # every message is in the queue before it is read
    for i in range(8):
        broker.publish(event_type, f"message {i}".encode(), message_id=str(i))
    got = broker.drain(spec.name, 5)
    assert [body.decode() for _props, body in got] == [f"message {i}" for i in range(3, 8)]
    assert broker.depth(spec.dlq) == 0

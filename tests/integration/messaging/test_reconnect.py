"""A dropped connection: relay and consumer reconnect, redeclare, and lose nothing."""

from __future__ import annotations

from sqlalchemy import select

from shared.messaging.consumer import Consumer
from shared.messaging.relay import OutboxRelay
from shared.messaging.topology import QueueSpec
from tests.support import wait_until

from .support import (
    Handled,
    InboxMessage,
    OutboxMessage,
    Running,
    add_events,
    close_vhost_connections,
    unique,
    unsent_count,
)


def handled(db) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(Handled.event_id)))


def test_relay_and_consumer_survive_a_dropped_connection(db, amqp_url, broker):
    event_type = unique("refstd.test.drop") + ".happened"
    spec = QueueSpec(unique("test.drop"), [event_type], retry_delays_ms=(100,))
    broker.own(spec)

    def handler(session, event):
        session.add(Handled(event_id=event["id"], type=event["type"]))

    relay = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=20, poll_interval=0.05)
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer), Running(relay):
        assert consumer.ready.wait(10)
        before = add_events(db, 40, event_type)
        wait_until(lambda: len(handled(db)) == 40, what="the first events end to end")

        # Rows are written while the connections are dropped and re-established.
        during = add_events(db, 100, event_type, batch=10)
        close_vhost_connections(amqp_url)
        after = add_events(db, 40, event_type)

        wait_until(lambda: relay.connection_count >= 2, what="the relay to reconnect")
        wait_until(lambda: consumer.connection_count >= 2, what="the consumer to reconnect")
        wait_until(lambda: unsent_count(db) == 0, timeout=20, what="the relay to drain the outbox")
        expected = before + during + after
        wait_until(lambda: len(set(handled(db))) == len(expected), timeout=20, what="every event handled")

    got = handled(db)
    assert set(got) == set(expected)  # nothing lost
    assert len(got) == len(expected)  # and, thanks to the inbox, nothing handled twice
    broker.close()  # its connection was dropped as well
    assert broker.depth(spec.name) == 0
    assert broker.depth(spec.dlq) == 0

"""The outbox relay against the real broker and both databases."""

from __future__ import annotations

import collections
import threading

import pika
import pytest
from sqlalchemy import select

from shared.messaging.envelope import CONTENT_TYPE, decode
from shared.messaging.relay import OutboxRelay
from tests.support import wait_until

from .support import OutboxMessage, Running, add_events, unique, unsent_count


def rows(db) -> list[OutboxMessage]:
    with db.transaction() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.seq)))


def test_relay_publishes_in_order_and_marks_sent(db, amqp_url, broker):
    event_type = unique("refstd.test.thing") + ".registered"
    queue = broker.bind_queue(unique("test.relay"), event_type)
    ids = add_events(db, 25, event_type)

    relay = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=10)
    try:
        assert relay.run_once() == 10
        assert unsent_count(db) == 15
        assert relay.run_once() == 10
        assert relay.run_once() == 5
        assert relay.run_once() == 0
    finally:
        relay.close()

    stored = rows(db)
    assert all(row.sent_at is not None and row.attempts == 0 and row.last_error is None for row in stored)
    messages = broker.drain(queue, 25)
    assert [props.message_id for props, _ in messages] == ids
    for (props, body), event_id in zip(messages, ids, strict=True):
        assert props.content_type == CONTENT_TYPE
        assert props.delivery_mode == pika.DeliveryMode.Persistent.value
        assert props.type == event_type
        event = decode(body)
        assert event["id"] == event_id
        assert event["type"] == event_type
    assert broker.depth(queue) == 0


class CrashBeforeMarking(OutboxRelay):
    """Dies after the broker confirmed the batch and before the rows are marked sent."""

    def _mark_sent(self, session, seqs):
        raise RuntimeError("killed between publish and mark")


def test_relay_killed_between_publish_and_mark_publishes_again(db, amqp_url, broker):
    event_type = unique("refstd.test.crash") + ".happened"
    queue = broker.bind_queue(unique("test.crash"), event_type)
    ids = add_events(db, 30, event_type)

    crashing = CrashBeforeMarking(db, OutboxMessage, amqp_url, batch_size=20)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            crashing.run_once()
    finally:
        crashing.close()
    assert unsent_count(db) == 30  # rolled back: nothing marked
    wait_until(lambda: broker.depth(queue) == 20, what="the first batch in the queue")

    fresh = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=20)
    try:
        while fresh.run_once():
            pass
    finally:
        fresh.close()
    assert unsent_count(db) == 0

    received = [props.message_id for props, _ in broker.drain(queue, 50)]
    counts = collections.Counter(received)
    assert set(counts) == set(ids)  # every event at least once
    assert sorted(counts.values()) == [1] * 10 + [2] * 20  # the first batch twice: duplicates, no loss


def test_unroutable_event_stays_unsent_with_last_error(db, amqp_url, broker, caplog):
    routed_type = unique("refstd.test.routed") + ".done"
    lost_type = unique("refstd.test.nobody") + ".listens"
    queue = broker.bind_queue(unique("test.routed"), routed_type)
    with db.transaction() as session:
        from .support import OUTBOX

        routed = OUTBOX.add(session, routed_type, "a", {})
        lost = OUTBOX.add(session, lost_type, "b", {})

    relay = OutboxRelay(db, OutboxMessage, amqp_url, retry_interval=0.2)
    try:
        with caplog.at_level("ERROR", logger="shared.messaging.relay"):
            assert relay.run_once() == 1
        assert "UNROUTABLE" in caplog.text and lost_type in caplog.text
        by_id = {row.event_id: row for row in rows(db)}
        assert by_id[routed["id"]].sent_at is not None
        assert by_id[lost["id"]].sent_at is None
        assert by_id[lost["id"]].attempts == 1
        assert "unroutable" in by_id[lost["id"]].last_error and "NO_ROUTE" in by_id[lost["id"]].last_error

        # Once a queue is bound, the retry pass publishes it.
        late = broker.bind_queue(unique("test.late"), lost_type)
        wait_until(lambda: relay.run_once() == 1, timeout=5, what="the retried row to be published")
        row = {r.event_id: r for r in rows(db)}[lost["id"]]
        assert row.sent_at is not None and row.attempts == 1
    finally:
        relay.close()
    assert [p.message_id for p, _ in broker.drain(queue, 1)] == [routed["id"]]
    assert [p.message_id for p, _ in broker.drain(late, 1)] == [lost["id"]]


def test_failed_rows_do_not_block_new_ones(db, amqp_url, broker):
    ok_type = unique("refstd.test.ok") + ".done"
    lost_type = unique("refstd.test.lost") + ".done"
    queue = broker.bind_queue(unique("test.ok"), ok_type)
    add_events(db, 5, lost_type)  # older than the routable ones, more than a batch
    ids = add_events(db, 3, ok_type)
    relay = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=4, retry_interval=60)
    try:
        assert relay.run_once() == 0  # 4 unroutable
        assert relay.run_once() == 3  # the 5th unroutable and the 3 routable ones
        assert relay.run_once() == 0  # retries are not due yet
    finally:
        relay.close()
    assert [p.message_id for p, _ in broker.drain(queue, 3)] == ids
    assert unsent_count(db) == 5


def test_two_relays_on_postgresql_never_publish_a_row_twice(pg_db, amqp_url, broker):
    event_type = unique("refstd.test.race") + ".happened"
    queue = broker.bind_queue(unique("test.race"), event_type)
    ids = add_events(pg_db, 3000, event_type)

    relays = [OutboxRelay(pg_db, OutboxMessage, amqp_url, batch_size=100, name=f"relay-{i}") for i in (1, 2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def drain(relay: OutboxRelay) -> None:
        try:
            start.wait()
            while unsent_count(pg_db):
                relay.run_once()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            relay.close()

    threads = [threading.Thread(target=drain, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert unsent_count(pg_db) == 0
    assert all(relay.sent_count > 0 for relay in relays), "both relays should have taken batches"
    assert sum(relay.sent_count for relay in relays) == 3000

    assert broker.depth(queue) == 3000
    received = [props.message_id for props, _ in broker.drain(queue, 3000)]
    assert len(set(received)) == 3000
    assert set(received) == set(ids)


def test_relay_run_loop_publishes_until_stopped(db, amqp_url, broker):
    event_type = unique("refstd.test.loop") + ".ticked"
    queue = broker.bind_queue(unique("test.loop"), event_type)
    relay = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=50, poll_interval=0.05)
    with Running(relay):
        first = add_events(db, 120, event_type)
        wait_until(lambda: unsent_count(db) == 0, what="the relay to drain the outbox")
        second = add_events(db, 3, event_type)
        wait_until(lambda: unsent_count(db) == 0, what="the relay to pick up new rows")
    assert relay.connection_count == 1
    assert [p.message_id for p, _ in broker.drain(queue, 123)] == first + second


STUCK_RELAY = """
import signal, sys
from shared.db import Database
from shared.messaging.relay import OutboxRelay
from tests.integration.messaging.support import OutboxMessage

class Stuck(OutboxRelay):
    def _mark_sent(self, session, seqs):
        print("confirmed", len(seqs), flush=True)
        signal.pause()  # SIGKILLed here, with the batch confirmed and the transaction open

Stuck(Database(sys.argv[1]), OutboxMessage, sys.argv[2], batch_size=20).run_once()
"""


def test_relay_process_sigkilled_after_confirms_loses_nothing(db, amqp_url, broker):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    event_type = unique("refstd.test.sigkill") + ".happened"
    queue = broker.bind_queue(unique("test.sigkill"), event_type)
    ids = add_events(db, 30, event_type)

    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_RELAY, db.url, amqp_url],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "confirmed 20"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert unsent_count(db) == 30

    fresh = OutboxRelay(db, OutboxMessage, amqp_url, batch_size=20)
    try:
        # On PostgreSQL the killed session's row locks go when the server notices the lost client.
        wait_until(lambda: fresh.run_once() is not None and unsent_count(db) == 0, what="a fresh relay to drain")
    finally:
        fresh.close()
    counts = collections.Counter(props.message_id for props, _ in broker.drain(queue, 50))
    assert set(counts) == set(ids)
    assert sorted(counts.values()) == [1] * 10 + [2] * 20

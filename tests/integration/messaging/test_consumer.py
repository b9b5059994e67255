"""The consumer against the real broker and both databases."""

from __future__ import annotations

import collections
import json

import pytest
from marshmallow import Schema, fields
from sqlalchemy import func, select

from shared.context import correlation_id
from shared.messaging.consumer import ATTEMPT_HEADER, ERROR_HEADER, REASON_HEADER, Consumer
from shared.messaging.envelope import encode, make_event
from shared.messaging.topology import QueueSpec
from tests.support import wait_until

from .support import OUTBOX, SOURCE, Handled, InboxMessage, Running, unique


def count(db, model) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def handled_ids(db) -> list[str]:
    with db.transaction() as session:
        return list(session.scalars(select(Handled.event_id).order_by(Handled.id)))


class Recorder:
    """A handler that records its calls and writes a row in the consumer's transaction."""

    def __init__(self, fail_times: int | float = 0) -> None:
        self.fail_times = fail_times
        self.calls: collections.Counter[str] = collections.Counter()
        self.correlation_ids: dict[str, str | None] = {}

    def __call__(self, session, event) -> None:
        self.calls[event["id"]] += 1
        self.correlation_ids[event["id"]] = correlation_id.get()
        session.add(Handled(event_id=event["id"], type=event["type"]))
        session.flush()
        if self.calls[event["id"]] <= self.fail_times:
            raise RuntimeError(f"handler failure {self.calls[event['id']]}")


def setup(broker, prefix: str, *, delays=(100, 200)):
    event_type = unique(f"refstd.test.{prefix}") + ".happened"
    spec = QueueSpec(unique(f"test.{prefix}"), [event_type], retry_delays_ms=delays, prefetch=10)
    broker.own(spec)
    return event_type, spec


def publish_event(broker, event_type: str, data: dict | None = None, **kwargs) -> dict:
    event = make_event(event_type, SOURCE, "s", data or {}, **kwargs)
    broker.publish(event_type, encode(event), message_id=event["id"])
    return event


def test_handler_runs_once_per_message_and_duplicates_are_skipped(db, amqp_url, broker):
    event_type, spec = setup(broker, "once")
    handler = Recorder()
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer):
        assert consumer.ready.wait(10), "the consumer did not start"
        events = [publish_event(broker, event_type, {"n": i}) for i in range(5)]
        # The same message redelivered (same message id), then a sentinel behind it.
        broker.publish(event_type, encode(events[0]), message_id=events[0]["id"])
        sentinel = publish_event(broker, event_type)
        wait_until(lambda: sentinel["id"] in handler.calls, what="the sentinel to be handled")
        wait_until(lambda: broker.depth(spec.name) == 0, what="every message acknowledged")
    assert handler.calls == {e["id"]: 1 for e in [*events, sentinel]}
    assert consumer.duplicate_count == 1
    assert handled_ids(db) == [e["id"] for e in [*events, sentinel]]
    assert count(db, InboxMessage) == 6
    assert broker.depth(spec.dlq) == 0


def test_handler_error_is_retried_through_the_delay_tiers_then_succeeds(db, amqp_url, broker):
    event_type, spec = setup(broker, "retry")
    handler = Recorder(fail_times=2)
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer):
        assert consumer.ready.wait(10)
        event = publish_event(broker, event_type)
        wait_until(lambda: handled_ids(db) == [event["id"]], what="the third attempt to succeed")
    assert handler.calls[event["id"]] == 3
    assert consumer.retried_count == 2
    assert count(db, InboxMessage) == 1  # the failed attempts rolled back their inbox rows
    assert broker.depth(spec.name) == 0
    assert broker.depth(spec.dlq) == 0
    assert all(broker.depth(q) == 0 for q in spec.retry_queues)


def test_always_failing_handler_ends_in_the_dlq_after_the_tiers(db, amqp_url, broker):
    event_type, spec = setup(broker, "dead")
    handler = Recorder(fail_times=float("inf"))
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer):
        assert consumer.ready.wait(10)
        event = publish_event(broker, event_type)
        wait_until(lambda: broker.depth(spec.dlq) == 1, what="the message in the DLQ")
    assert handler.calls[event["id"]] == 1 + len(spec.retry_delays_ms)
    assert count(db, InboxMessage) == 0 and count(db, Handled) == 0
    [(props, body)] = broker.drain(spec.dlq, 1)
    assert props.message_id == event["id"]
    assert json.loads(body)["id"] == event["id"]
    assert props.headers[ATTEMPT_HEADER] == 2
    assert props.headers[REASON_HEADER] == "failed"
    assert "handler failure 3" in props.headers[ERROR_HEADER]
    assert broker.depth(spec.name) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"specversion": "1.0", "id": "x", "source": "/s", "data": {}}).encode(),  # no type
    ],
    ids=["text", "binary", "array", "no-type"],
)
def test_poison_message_goes_to_the_dlq_at_once_and_the_consumer_carries_on(db, amqp_url, broker, body):
    event_type, spec = setup(broker, "poison")
    handler = Recorder()
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer):
        assert consumer.ready.wait(10)
        broker.publish(event_type, body, message_id="poison")
        after = publish_event(broker, event_type)
        wait_until(lambda: handled_ids(db) == [after["id"]], what="the next message to be handled")
        wait_until(lambda: broker.depth(spec.dlq) == 1, what="the poison message in the DLQ")
    [(props, dead_body)] = broker.drain(spec.dlq, 1)
    assert dead_body == body
    assert props.headers[REASON_HEADER] == "invalid"
    assert ATTEMPT_HEADER not in props.headers  # never retried
    assert consumer.retried_count == 0
    assert list(handler.calls) == [after["id"]]


class ThingSchema(Schema):
    n = fields.Integer(required=True)


def test_data_failing_its_schema_is_poison(db, amqp_url, broker):
    event_type, spec = setup(broker, "schema")
    handler = Recorder()
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler}, schemas={event_type: ThingSchema})
    with Running(consumer):
        assert consumer.ready.wait(10)
        bad = publish_event(broker, event_type, {"n": "not a number"})
        good = publish_event(broker, event_type, {"n": 3})
        wait_until(lambda: handled_ids(db) == [good["id"]])
        wait_until(lambda: broker.depth(spec.dlq) == 1)
    [(props, _)] = broker.drain(spec.dlq, 1)
    assert props.message_id == bad["id"]
    assert props.headers[REASON_HEADER] == "invalid"
    assert bad["id"] not in handler.calls


def test_patterns_unhandled_types_and_correlation(db, amqp_url, broker):
    prefix = unique("refstd.test.pattern")
    spec = QueueSpec(unique("test.pattern"), [f"{prefix}.#"], retry_delays_ms=(100,))
    broker.own(spec)
    exact, wildcard = Recorder(), Recorder()
    consumer = Consumer(
        db,
        InboxMessage,
        amqp_url,
        spec,
        {f"{prefix}.thing.created": exact, f"{prefix}.*.updated": wildcard},
        name="pattern-consumer",
    )
    with Running(consumer):
        assert consumer.ready.wait(10)
        created = publish_event(broker, f"{prefix}.thing.created", correlation_id="req-42")
        updated = publish_event(broker, f"{prefix}.other.updated")
        ignored = publish_event(broker, f"{prefix}.thing.deleted")
        last = publish_event(broker, f"{prefix}.thing.created")
        wait_until(lambda: last["id"] in exact.calls)
        wait_until(lambda: broker.depth(spec.name) == 0)
    assert set(exact.calls) == {created["id"], last["id"]}
    assert set(wildcard.calls) == {updated["id"]}
    assert ignored["id"] not in exact.calls | wildcard.calls
    assert exact.correlation_ids[created["id"]] == "req-42"
    assert exact.correlation_ids[last["id"]] == last["id"]
    assert correlation_id.get() is None
    with db.transaction() as session:
        assert set(session.scalars(select(InboxMessage.consumer))) == {"pattern-consumer"}


def test_events_written_by_a_handler_carry_the_correlation_id(db, amqp_url, broker):
    event_type, spec = setup(broker, "chain")

    def handler(session, event):
        OUTBOX.add(session, "refstd.test.chain.followed", None, {"after": event["id"]})

    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer):
        assert consumer.ready.wait(10)
        event = publish_event(broker, event_type, correlation_id="req-7")
        from .support import OutboxMessage

        def outbox_bodies():
            with db.transaction() as session:
                return list(session.scalars(select(OutboxMessage.body)))

        [body] = wait_until(outbox_bodies, what="the handler's event in the outbox")
    follow = json.loads(body)
    assert follow["correlationid"] == "req-7"
    assert follow["data"] == {"after": event["id"]}


def test_consumer_recovers_when_its_queue_is_deleted(db, amqp_url, broker):
    event_type, spec = setup(broker, "deleted")
    handler = Recorder()
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {event_type: handler})
    with Running(consumer):
        assert consumer.ready.wait(10)
        first = publish_event(broker, event_type)
        wait_until(lambda: first["id"] in handler.calls)
        broker.ch().queue_delete(queue=spec.name)
        wait_until(lambda: consumer.connection_count >= 2 and consumer.ready.is_set(), what="a redeclared queue")
        second = publish_event(broker, event_type)
        wait_until(lambda: second["id"] in handler.calls, what="the next event after the redeclaration")
    assert handled_ids(db) == [first["id"], second["id"]]

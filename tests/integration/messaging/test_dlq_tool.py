"""``python -m scripts.dlq`` against the real broker: messages dead-lettered by a real consumer (and by the
broker), listed, shown without loss, replayed to a consumer that then handles each exactly once, purged."""

from __future__ import annotations

import collections
import json

import pika
import pytest
from sqlalchemy import func, select

from scripts import dlq
from shared.messaging.consumer import ATTEMPT_HEADER, ERROR_HEADER, QUEUE_HEADER, REASON_HEADER, Consumer
from shared.messaging.envelope import encode, make_event
from shared.messaging.topology import QueueSpec, declare_queue
from tests.support import wait_until

from .support import SOURCE, Handled, InboxMessage, Running, unique


class Outage:
    """A handler that fails while ``down`` (the database or a dependency is away) and records its work."""

    def __init__(self) -> None:
        self.down = True
        self.calls: collections.Counter[str] = collections.Counter()

    def __call__(self, session, event) -> None:
        self.calls[event["id"]] += 1
        if self.down:
            raise RuntimeError("database unavailable")
        session.add(Handled(event_id=event["id"], type=event["type"]))


@pytest.fixture
def queue(broker):
    """A consumer's queue (short retry tiers) and the two event types it is bound to."""
    prefix = unique("refstd.test.dlq")
    spec = QueueSpec(unique("test.dlq"), [f"{prefix}.#"], retry_delays_ms=(50, 100), prefetch=10)
    broker.own(spec)
    declare_queue(broker.ch(), spec)
    return spec, f"{prefix}.booking.confirmed", f"{prefix}.notice.due"


def cli(capsys, spec: QueueSpec, amqp_url: str, *argv: str) -> tuple[int, str, str]:
    """Run the command line on this test's queue; returns (exit status, stdout, stderr)."""
    status = dlq.main(["--amqp-url", amqp_url, *argv], queues=(spec,))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def publish(broker, event_type: str) -> dict:
    event = make_event(event_type, SOURCE, "s", {"n": 1})
    broker.publish(event_type, encode(event), message_id=event["id"])
    return event


def handled(db) -> collections.Counter[str]:
    with db.transaction() as session:
        return collections.Counter(session.scalars(select(Handled.event_id)))


def inbox_rows(db) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(InboxMessage))


def test_dead_letters_are_listed_shown_and_replayed_then_handled_exactly_once(db, amqp_url, broker, queue, capsys):
    spec, booking, notice = queue
    handler = Outage()
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {booking: handler, notice: handler})
    with Running(consumer):
        assert consumer.ready.wait(10), "the consumer did not start"
        events = [publish(broker, booking), publish(broker, booking), publish(broker, notice)]
        wait_until(lambda: broker.depth(spec.dlq) == 3, what="three messages through the retry tiers to the DLQ")

        status, out, _ = cli(capsys, spec, amqp_url, "list")
        assert status == 0
        [row] = [line.split() for line in out.splitlines() if line.startswith(spec.dlq)]
        assert row == [spec.dlq, "3", spec.name, "0", "1"]

        status, out, _ = cli(capsys, spec, amqp_url, "show", spec.name, "--json", "--bytes", "40")
        assert status == 0
        shown = json.loads(out)["messages"]
        assert {m["event_id"] for m in shown} == {e["id"] for e in events}
        assert {(m["type"], m["reason"], m["attempts"]) for m in shown} == {(booking, "failed", 2),
                                                                            (notice, "failed", 2)}
        assert all("database unavailable" in m["error"] and len(m["body"]) == 40 for m in shown)
        assert broker.depth(spec.dlq) == 3, "show removed messages"

        handler.down = False  # the outage is over
        status, out, _ = cli(capsys, spec, amqp_url, "replay", spec.dlq, "--type", booking, "--limit", "1")
        assert status == 0 and f"1 replayed to {spec.name}" in out
        wait_until(lambda: sum(handled(db).values()) == 1, what="the first replayed event to be handled")
        assert broker.depth(spec.dlq) == 2

        status, out, _ = cli(capsys, spec, amqp_url, "replay", spec.name)
        assert status == 0 and f"2 replayed to {spec.name}" in out
        wait_until(lambda: sum(handled(db).values()) == 3, what="every replayed event to be handled")
        wait_until(lambda: broker.depth(spec.name) == 0, what="the work queue to be drained")

    assert handled(db) == {e["id"]: 1 for e in events}
    assert inbox_rows(db) == 3
    assert handler.calls == {e["id"]: 1 + len(spec.retry_delays_ms) + 1 for e in events}
    assert consumer.duplicate_count == 0
    assert broker.depth(spec.dlq) == 0


def test_a_replay_that_crashes_after_the_confirm_leaves_a_duplicate_that_the_inbox_skips(
        db, amqp_url, broker, queue, monkeypatch, capsys):
    spec, booking, _ = queue
    handler = Outage()
    consumer = Consumer(db, InboxMessage, amqp_url, spec, {booking: handler})
    with Running(consumer):
        assert consumer.ready.wait(10)
        event = publish(broker, booking)
        wait_until(lambda: broker.depth(spec.dlq) == 1, what="the message in the DLQ")
        handler.down = False

        def crash(_channel, _tag):
            raise KeyboardInterrupt  # the operator's process dies between the confirm and the ack

        with monkeypatch.context() as patch:
            patch.setattr(dlq, "acknowledge", crash)
            with pytest.raises(KeyboardInterrupt):
                cli(capsys, spec, amqp_url, "replay", spec.name)
        wait_until(lambda: handled(db) == {event["id"]: 1}, what="the copy to be handled")
        assert broker.depth(spec.dlq) == 1, "the dead letter was lost with the crash"

        status, _, _ = cli(capsys, spec, amqp_url, "replay", spec.name)  # the operator runs it again
        assert status == 0
        wait_until(lambda: consumer.duplicate_count == 1, what="the second copy to be skipped as a duplicate")

    assert handled(db) == {event["id"]: 1}
    assert inbox_rows(db) == 1
    assert broker.depth(spec.dlq) == 0 and broker.depth(spec.name) == 0


def dead_letter(broker, spec: QueueSpec, body: bytes, message_id: str, reason: str, event_type: str | None = None):
    """A message in the DLQ exactly as the consumer puts it there."""
    headers = {REASON_HEADER: reason, ERROR_HEADER: "RuntimeError: boom", QUEUE_HEADER: spec.name}
    if reason == "failed":
        headers[ATTEMPT_HEADER] = len(spec.retry_delays_ms)
    broker.ch().basic_publish(exchange="", routing_key=spec.dlq, body=body, properties=pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent, content_type="application/cloudevents+json",
        message_id=message_id, type=event_type, headers=headers))


def test_a_replayed_message_leaves_the_broker_and_retry_headers_behind(amqp_url, broker, queue, capsys):
    spec, booking, _ = queue
    rejected = publish(broker, booking)
    wait_until(lambda: broker.depth(spec.name) == 1)
    channel = broker.ch()
    method, _, _ = channel.basic_get(queue=spec.name, auto_ack=False)
    channel.basic_nack(delivery_tag=method.delivery_tag, requeue=False)  # the consumer's fallback
    wait_until(lambda: broker.depth(spec.dlq) == 1, what="the broker to dead-letter the message")
    failed = make_event(booking, SOURCE, "s", {"n": 2})
    dead_letter(broker, spec, encode(failed), failed["id"], "failed", booking)
    wait_until(lambda: broker.depth(spec.dlq) == 2)

    status, out, _ = cli(capsys, spec, amqp_url, "show", spec.name)
    assert status == 0
    assert f"event {rejected['id']}  type {booking}  reason rejected" in out
    assert f"x-death: rejected in {spec.name} x1" in out and f"routing keys {booking}" in out
    assert f"event {failed['id']}  type {booking}  reason failed" in out and "retries 2" in out

    status, out, _ = cli(capsys, spec, amqp_url, "replay", spec.name)
    assert status == 0 and rejected["id"] in out and failed["id"] in out
    copies = {properties.message_id: (properties, json.loads(body)) for properties, body in broker.drain(spec.name, 2)}
    assert {event_id: body for event_id, (_, body) in copies.items()} == {e["id"]: e for e in (rejected, failed)}
    for properties, _ in copies.values():
        # The consumer starts the copy's retries afresh; the count of replays is all that is added.
        assert properties.headers == {dlq.REPLAYED_HEADER: 1}
    assert broker.depth(spec.dlq) == 0


def test_purge_asks_for_yes_and_deletes_only_what_is_selected(amqp_url, broker, queue, capsys):
    spec, booking, notice = queue
    failed = [make_event(t, SOURCE, "s", {"n": 1}) for t in (booking, booking, notice)]
    for event in failed:
        dead_letter(broker, spec, encode(event), event["id"], "failed", event["type"])
    dead_letter(broker, spec, b"\xff{not json", "poison-1", "invalid")
    wait_until(lambda: broker.depth(spec.dlq) == 4)

    status, out, _ = cli(capsys, spec, amqp_url, "show", spec.dlq, "--reason", "invalid")
    assert status == 0 and "1 shown of 4 examined" in out
    assert "event poison-1  type ?  reason invalid" in out and "body: \ufffd{not json" in out

    status, _, err = cli(capsys, spec, amqp_url, "purge", spec.dlq)
    assert status == 1 and "--yes" in err and "4 message(s)" in err
    assert broker.depth(spec.dlq) == 4

    every_booking_event = booking.rsplit(".", 1)[0] + ".*"
    status, out, _ = cli(capsys, spec, amqp_url, "purge", spec.dlq, "--yes", "--type", every_booking_event)
    assert status == 0 and "2 deleted" in out
    status, out, _ = cli(capsys, spec, amqp_url, "show", spec.dlq, "--json")
    assert {m["event_id"] for m in json.loads(out)["messages"]} == {failed[2]["id"], "poison-1"}

    status, out, _ = cli(capsys, spec, amqp_url, "purge", spec.dlq, "--yes")
    assert status == 0 and "2 deleted" in out
    assert broker.depth(spec.dlq) == 0


def test_an_unknown_queue_is_refused_naming_the_known_ones(amqp_url, queue, capsys):
    spec, _, _ = queue
    status, _, err = cli(capsys, spec, amqp_url, "replay", "scheduler.inventroy")
    assert status == 1 and f"the queues are: {spec.name}" in err

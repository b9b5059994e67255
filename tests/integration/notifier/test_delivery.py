"""The dispatcher: claim, send outside any transaction, record; backoff, dead, retry, never twice."""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import select, update

from services.notifier import delivery, events
from services.notifier.delivery import Dispatcher, retry_delay
from services.notifier.models import DeliveryAttempt, Notification
from services.notifier.schemas import NotificationEventSchema
from services.notifier.senders import Outcome
from shared.db import Database
from shared.messaging.envelope import make_event
from shared.timeutil import utcnow
from tests.unit.notifier.samples import all_events

S = "refstd.scheduler."


class RecordingSender:
    """A real ``Sender``: records what it was given and answers from a script.

    ``script(notification)`` -> Outcome (default: delivered). ``delay`` seconds per notification.
    """

    def __init__(self, channel: str = "email", script=None, delay: float = 0.0) -> None:
        self.channel = channel
        self.script = script or (lambda notification: Outcome(ok=True, duration_ms=1))
        self.delay = delay
        self.sent: list[str] = []
        self.batches: list[list[str]] = []
        self.closed = 0
        self._lock = threading.Lock()

    def send(self, notifications):
        outcomes = []
        for notification in notifications:
            if self.delay:
                time.sleep(self.delay)
            outcomes.append(self.script(notification))
        with self._lock:
            self.sent += [n.id for n in notifications]
            self.batches.append([n.id for n in notifications])
        return outcomes

    def close(self) -> None:
        self.closed += 1


def notify(deliver, name: str = "booking.cancelled") -> dict:
    """Deliver a fresh copy of a sample event (two emails for booking.cancelled)."""
    event = copy.deepcopy(all_events()[S + name])
    return deliver(event=make_event(event["type"], event["source"], event["subject"], event["data"]))


def notifications(db, **filters) -> list[Notification]:
    with db.Session() as session:
        return list(session.scalars(select(Notification).filter_by(**filters).order_by(Notification.recipient)))


def attempts_of(db, notification_id: str) -> list[DeliveryAttempt]:
    with db.Session() as session:
        return list(session.scalars(select(DeliveryAttempt).where(DeliveryAttempt.notification_id == notification_id)
                                    .order_by(DeliveryAttempt.attempted_at)))


def make_due(db) -> None:
    with db.transaction() as session:
        session.execute(update(Notification).values(next_attempt_at=utcnow() - dt.timedelta(seconds=1)))


def dispatcher(db, sender, **kwargs) -> Dispatcher:
    return Dispatcher(db, sender, channel=sender.channel, rng=random.Random(7), **kwargs)


class TestSending:
    def test_a_delivered_notification_is_sent_with_its_attempt_and_event(self, notifier_db, deliver, outbox):
        event = notify(deliver)
        sender = RecordingSender()
        assert dispatcher(notifier_db, sender).run_once() == 2
        sent = notifications(notifier_db)
        assert sorted(sender.sent) == sorted(n.id for n in sent)
        for notification in sent:
            assert (notification.status, notification.attempts, notification.claimed_until) == ("sent", 1, None)
            assert notification.sent_at is not None and notification.last_error is None
            [attempt] = attempts_of(notifier_db, notification.id)
            assert (attempt.outcome, attempt.error, attempt.duration_ms) == ("sent", None, 1)
        published = outbox("notification.sent")
        assert len(published) == 2 and outbox("notification.failed") == []
        first = next(n for n in sent if n.id == published[0]["subject"])
        assert published[0]["type"] == "refstd.notifier.notification.sent"
        assert published[0]["source"] == "/services/notifier"
        assert published[0]["correlationid"] == event["correlationid"]
        assert published[0]["data"] == NotificationEventSchema().dump(first)
        assert published[0]["data"]["status"] == "sent"

    def test_a_sent_notification_is_never_sent_again(self, notifier_db, deliver):
        event = notify(deliver)
        sender = RecordingSender()
        worker = dispatcher(notifier_db, sender)
        worker.run_once()
        make_due(notifier_db)
        assert worker.run_once() == 0
        deliver(event=event)  # the event comes again
        with notifier_db.transaction() as session:
            events.handler_for(event["type"])(session, event)
        assert worker.run_once() == 0 and len(sender.sent) == 2

    def test_each_channel_sends_only_its_own(self, notifier_db, deliver):
        from tests.integration.notifier.test_routing import add_endpoint

        endpoint = add_endpoint(notifier_db, None, "#")
        notify(deliver)
        hooks, mails = RecordingSender("webhook"), RecordingSender("email")
        assert dispatcher(notifier_db, hooks).run_once() == 1
        assert dispatcher(notifier_db, mails).run_once() == 2
        [webhook] = notifications(notifier_db, channel="webhook")
        assert hooks.sent == [webhook.id] and webhook.recipient == endpoint and webhook.status == "sent"
        assert webhook.id not in mails.sent

    def test_a_subject_the_sender_rendered_is_kept(self, notifier_db, deliver):
        notify(deliver)
        with notifier_db.transaction() as session:
            session.execute(update(Notification).values(subject=None))

        def render(notification):
            notification.subject = f"about {notification.recipient}"
            return Outcome(ok=True)

        dispatcher(notifier_db, RecordingSender(script=render)).run_once()
        assert {n.subject for n in notifications(notifier_db)} == {
            "about li.custodian@example.com", "about zhang@example.edu"}

    def test_batches_are_at_most_batch_size_oldest_due_first(self, notifier_db, deliver):
        for _ in range(3):
            notify(deliver)
        sender = RecordingSender()
        worker = dispatcher(notifier_db, sender, batch_size=4)
        assert [worker.run_once(), worker.run_once(), worker.run_once()] == [4, 2, 0]
        assert [len(batch) for batch in sender.batches] == [4, 2]


class TestFailures:
    def test_a_failure_is_retried_after_a_backoff_and_then_sent_once(self, notifier_db, deliver, outbox):
        notify(deliver, "booking.confirmed")
        answers = iter([Outcome(ok=False, error="451 try later", status_code=451), Outcome(ok=True)])
        sender = RecordingSender(script=lambda n: next(answers))
        worker = dispatcher(notifier_db, sender, base_delay=30, max_delay=3600)
        before = utcnow()
        worker.run_once()
        [failed] = notifications(notifier_db)
        assert (failed.status, failed.attempts, failed.last_error) == ("failed", 1, "451 try later")
        assert before <= failed.next_attempt_at <= utcnow() + dt.timedelta(seconds=30)
        [attempt] = attempts_of(notifier_db, failed.id)
        assert (attempt.outcome, attempt.error, attempt.status_code) == ("failed", "451 try later", 451)
        [event] = outbox("notification.failed")
        assert event["data"]["status"] == "failed" and event["data"]["last_error"] == "451 try later"

        with notifier_db.transaction() as session:  # not due before its time
            session.execute(update(Notification).values(next_attempt_at=utcnow() + dt.timedelta(seconds=60)))
        assert worker.run_once() == 0
        make_due(notifier_db)
        assert worker.run_once() == 1
        [sent] = notifications(notifier_db)
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 2, None)
        assert sender.sent == [sent.id, sent.id] and len(attempts_of(notifier_db, sent.id)) == 2
        assert len(outbox("notification.sent")) == 1

    def test_out_of_attempts_is_dead(self, notifier_db, deliver, outbox):
        notify(deliver, "booking.confirmed")
        sender = RecordingSender(script=lambda n: Outcome(ok=False, error="connection refused"))
        worker = dispatcher(notifier_db, sender, max_attempts=3)
        statuses = []
        for _ in range(3):
            make_due(notifier_db)
            worker.run_once()
            statuses.append(notifications(notifier_db)[0].status)
        assert statuses == ["failed", "failed", "dead"]
        make_due(notifier_db)
        assert worker.run_once() == 0 and len(sender.sent) == 3
        assert [e["data"]["status"] for e in outbox("notification.failed")] == ["failed", "failed", "dead"]
        assert notifications(notifier_db)[0].attempts == 3

    def test_a_failure_not_worth_retrying_is_dead_at_once(self, notifier_db, deliver):
        notify(deliver, "booking.confirmed")
        sender = RecordingSender(script=lambda n: Outcome(ok=False, error="endpoint deleted", retryable=False))
        dispatcher(notifier_db, sender).run_once()
        [dead] = notifications(notifier_db)
        assert (dead.status, dead.attempts, dead.last_error) == ("dead", 1, "endpoint deleted")

    def test_a_sender_that_raises_fails_the_batch_and_the_dispatcher_goes_on(self, notifier_db, deliver):
        notify(deliver)

        class Broken(RecordingSender):
            def send(self, notifications):
                raise ConnectionResetError("smtp server went away")

        dispatcher(notifier_db, Broken()).run_once()
        assert {(n.status, n.last_error) for n in notifications(notifier_db)} == {
            ("failed", "ConnectionResetError: smtp server went away")}
        make_due(notifier_db)
        assert dispatcher(notifier_db, RecordingSender()).run_once() == 2

    def test_a_streaming_senders_outcomes_are_recorded_as_they_come(self, notifier_db, deliver):
        # A worker killed mid-batch then sends again only what it had not recorded, not the whole batch.
        notify(deliver)
        order, seen = [], []

        class Streaming(RecordingSender):
            def send_each(self, batch):
                order.extend(n.id for n in batch)
                for index in range(len(batch)):
                    seen.append({n.id: n.status for n in notifications(notifier_db)})
                    if index == 1:
                        raise ConnectionResetError("killed")
                    yield index, Outcome(ok=True)

        dispatcher(notifier_db, Streaming(), record_every=1).run_once()
        first, second = order
        assert seen[1] == {first: "sent", second: "pending"}
        assert {n.id: (n.status, n.last_error) for n in notifications(notifier_db)} == {
            first: ("sent", None), second: ("failed", "ConnectionResetError: killed")}

    def test_a_sender_that_answers_for_too_few_fails_the_batch(self, notifier_db, deliver):
        notify(deliver)

        class Short(RecordingSender):
            def send(self, notifications):
                return [Outcome(ok=True)]

        dispatcher(notifier_db, Short()).run_once()
        assert {n.status for n in notifications(notifier_db)} == {"failed"}


class TestBackoff:
    def test_the_delay_doubles_with_equal_jitter_up_to_the_cap(self):
        rng = random.Random(1)
        for attempts, ceiling in [(1, 2), (2, 4), (3, 8), (6, 64), (12, 3600), (200, 3600)]:
            delays = [retry_delay(attempts, 2, 3600, rng) for _ in range(200)]
            assert all(ceiling / 2 <= d <= ceiling for d in delays)
            assert max(delays) > ceiling * 0.9  # spread over the upper half (equal jitter)
            assert min(delays) < ceiling * 0.6

    def test_eight_attempts_take_two_minutes_whatever_the_draw(self):
        # An SMTP server away for a minute never makes a notification dead.
        rng = random.Random(2)
        for _ in range(200):
            assert sum(retry_delay(attempts, 2, 3600, rng) for attempts in range(1, 8)) >= 127


class TestClaims:
    def test_a_claimed_notification_is_not_taken_by_another_dispatcher_until_its_claim_expires(
            self, notifier_db, deliver):
        notify(deliver, "booking.confirmed")
        first = dispatcher(notifier_db, RecordingSender(), claim_seconds=120)
        claimed = first.claim()
        assert len(claimed) == 1
        [row] = notifications(notifier_db)
        assert row.claimed_until > utcnow() + dt.timedelta(seconds=100)
        other = RecordingSender()
        assert dispatcher(notifier_db, other).run_once() == 0
        with notifier_db.transaction() as session:  # the first dispatcher died: its claim runs out
            session.execute(update(Notification).values(claimed_until=utcnow() - dt.timedelta(seconds=1)))
        assert dispatcher(notifier_db, other).run_once() == 1 and other.sent == [row.id]

    @pytest.mark.parametrize("dispatchers", [2, 3])
    def test_concurrent_dispatchers_never_send_one_notification_twice(self, notifier_db, deliver, dispatchers):
        now = utcnow()
        event = all_events()[S + "booking.confirmed"]
        with notifier_db.transaction() as session:
            events.insert_new(session, [
                {"id": f"00000000-0000-4000-8000-{i:012d}", "event_id": event["id"], "event_type": event["type"],
                 "event": event, "channel": "email", "recipient": f"r{i}@example.com", "recipient_name": None,
                 "organization_id": None, "endpoint_id": None, "subject": None, "locale": "zh-CN",
                 "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now}
                for i in range(240)])
        # Separate engines, as separate worker processes would have.
        databases = [Database(notifier_db.url) for _ in range(dispatchers)]
        sender = RecordingSender(delay=0.001)
        workers = [Dispatcher(db, sender, channel="email", batch_size=10, poll_interval=0.01, name=f"d{i}")
                   for i, db in enumerate(databases)]
        stop = threading.Event()
        threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
        try:
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 60
            while len(sender.sent) < 240 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # anything sent twice would show up now
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            for db in databases:
                db.dispose()
        assert Counter(Counter(sender.sent).values()) == {1: 240}
        assert {n.status for n in notifications(notifier_db)} == {"sent"}
        assert sum(w.sent_count for w in workers) == 240
        assert sender.closed == dispatchers
        if notifier_db.is_postgres:  # row locks let them work side by side
            assert all(w.sent_count > 0 for w in workers)


class TestRetry:
    def test_a_dead_notification_is_retried_once_more(self, notifier_db, deliver):
        notify(deliver, "booking.confirmed")
        dispatcher(notifier_db, RecordingSender(script=lambda n: Outcome(ok=False, error="x", retryable=False))
                   ).run_once()
        with notifier_db.transaction() as session:
            [dead] = session.scalars(select(Notification)).all()
            delivery.retry(session, dead)
        [pending] = notifications(notifier_db)
        assert (pending.status, pending.attempts) == ("pending", 1)
        assert pending.next_attempt_at <= utcnow()
        sender = RecordingSender()
        assert dispatcher(notifier_db, sender).run_once() == 1
        assert notifications(notifier_db)[0].status == "sent"

    def test_a_sent_notification_cannot_be_retried(self, notifier_db, deliver):
        notify(deliver, "booking.confirmed")
        dispatcher(notifier_db, RecordingSender()).run_once()
        with notifier_db.transaction() as session:
            [sent] = session.scalars(select(Notification)).all()
            with pytest.raises(delivery.AlreadySent):
                delivery.retry(session, sent)


class TestLoop:
    def test_run_sends_until_stopped_and_closes_the_sender(self, notifier_db, deliver):
        sender = RecordingSender()
        worker = dispatcher(notifier_db, sender, poll_interval=0.02)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            notify(deliver)
            deadline = time.monotonic() + 10
            while len(sender.sent) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            thread.join(timeout=10)
        assert not thread.is_alive()
        assert len(sender.sent) == 2 and sender.closed == 1
        assert {n.status for n in notifications(notifier_db)} == {"sent"}

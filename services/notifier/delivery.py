"""Sending what was recorded: one :class:`Dispatcher` per channel, each in its own worker thread.

One round (:meth:`Dispatcher.run_once`):

1. **claim** (a short transaction, committed): up to ``batch_size`` notifications of the channel that
   are ``pending`` or ``failed``, due (``next_attempt_at <= now``) and not claimed by a live dispatcher
   (``claimed_until`` empty or past) get ``claimed_until = now + claim_seconds``. On PostgreSQL the
   rows are locked ``FOR UPDATE SKIP LOCKED`` while claiming, so dispatchers on several workers take
   disjoint batches; SQLite serialises the claim (``BEGIN IMMEDIATE``). A ``sent`` notification is
   never claimed, so it is never sent again.
2. **send** the batch through the channel's :class:`~services.notifier.senders.Sender`, outside any
   transaction (an SMTP server or a webhook receiver may take its time; no row lock is held).
3. **record** (a new transaction): one :class:`DeliveryAttempt` per notification, and its status:
   delivered -> ``sent`` (+ ``notification.sent``); failed -> ``failed`` with the next attempt after an
   exponential backoff with jitter, capped (+ ``notification.failed``); failed and not worth
   retrying, or out of attempts -> ``dead`` (+ ``notification.failed``). A sender that reports each
   outcome as it has it (``send_each``, as both channels' senders do) has them recorded while the
   batch goes on, ``record_every`` (10) at a time, rather than the whole batch at the end.

A crash between sending and recording leaves the rows claimed: they are sent again once the claim
expires (at-least-once; receivers deduplicate by ``Message-ID`` or ``webhook-id``). Recording as the
batch goes keeps that to the outcomes not yet recorded when the worker died: at most ``record_every``
emails, or that many webhooks and those in flight. The claim must outlast the slowest batch the sender
can take: ``claim_seconds`` is set per channel (``NOTIFIER_EMAIL_CLAIM_SECONDS``,
``NOTIFIER_WEBHOOK_CLAIM_SECONDS``).

The email and webhook channels have their own dispatchers (and threads), so a slow or dead webhook
receiver never holds back email. Within the webhook channel a dead receiver backs off exponentially
and so stops taking room in the batches; batches are not otherwise shared out per endpoint.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, lazyload

from services.notifier import events
from services.notifier.models import DeliveryAttempt, Notification
from services.notifier.senders import Outcome, Sender
from shared.messaging.connection import Backoff
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

#: Statuses a dispatcher may (re)send.
SENDABLE = ("pending", "failed")


class AlreadySent(Exception):
    """A sent notification cannot be retried: it was delivered."""


def retry_delay(attempts: int, base: float, maximum: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: equal jitter, uniform in [c/2, c] with
    c = min(maximum, base * 2^(attempts-1)) (AWS Architecture Blog, "Exponential Backoff And Jitter").

    The floor makes the attempts of one notification take time, whatever the draw: with the defaults
    (base 2 s, 8 attempts) the last comes at least 127 s after the first, so an SMTP server or a
    receiver that is away for a minute never makes a notification ``dead``. Full jitter (from 0)
    could spend all 8 attempts within seconds.
    """
    ceiling = min(maximum, base * 2 ** max(0, min(attempts - 1, 60)))
    return (rng or random).uniform(ceiling / 2, ceiling)


def retry(session: Session, notification: Notification) -> Notification:
    """Send a failed or dead notification again now (one more attempt; the count goes on).

    A claim in progress is left alone, so a batch being sent is not sent twice.
    :raises AlreadySent: the notification was delivered.
    """
    if notification.status == "sent":
        raise AlreadySent(notification.id)
    notification.status = "pending"
    notification.next_attempt_at = utcnow()
    return notification


class Dispatcher:
    """Sends the due notifications of one channel through its sender. A worker component."""

    def __init__(
        self,
        database,
        sender: Sender,
        *,
        channel: str,
        batch_size: int = 50,
        poll_interval: float = 0.5,
        max_attempts: int = 8,
        base_delay: float = 2.0,
        max_delay: float = 3600.0,
        claim_seconds: float = 120.0,
        record_every: int = 10,
        name: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if record_every < 1:
            raise ValueError("record_every must be at least 1")
        self.database = database
        self.sender = sender
        self.channel = channel
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.claim_seconds = claim_seconds
        self.record_every = record_every
        self.name = name or f"notifier.{channel}"
        self._rng = rng or random.Random()
        #: Counters, for tests and logs.
        self.sent_count = 0
        self.failed_count = 0
        self.dead_count = 0

    def __repr__(self) -> str:
        return f"<Dispatcher {self.name} ({self.channel})>"

    # -- one round ---------------------------------------------------------------------------

    def run_once(self) -> int:
        """Claim, send and record one batch; returns how many notifications it handled."""
        batch = self.claim()
        if not batch:
            return 0
        counts = self._send_and_record(batch)
        if counts["failed"] or counts["dead"]:
            log.warning("%s: %d sent, %d failed (will retry), %d dead", self.name, counts["sent"], counts["failed"],
                        counts["dead"])
        return len(batch)

    def claim(self) -> list[Notification]:
        """Take up to ``batch_size`` due notifications of the channel (committed before returning)."""
        now = utcnow()
        query = (
            select(Notification.id)
            .where(
                Notification.channel == self.channel,
                Notification.status.in_(SENDABLE),
                Notification.next_attempt_at <= now,
                or_(Notification.claimed_until.is_(None), Notification.claimed_until < now),
            )
            .order_by(Notification.next_attempt_at, Notification.id)
            .limit(self.batch_size)
        )
        if self.database.is_postgres:
            query = query.with_for_update(skip_locked=True)
        with self.database.transaction() as session:
            ids = list(session.scalars(query))
            if not ids:
                return []
            session.execute(
                update(Notification).where(Notification.id.in_(ids))
                .values(claimed_until=now + dt.timedelta(seconds=self.claim_seconds)),
                execution_options={"synchronize_session": False},
            )
            rows = session.scalars(
                select(Notification).where(Notification.id.in_(ids)).options(lazyload(Notification.attempts_log))
            ).all()
        order = {notification_id: index for index, notification_id in enumerate(ids)}
        return sorted(rows, key=lambda row: order[row.id])

    def _outcomes(self, batch: list[Notification]) -> Iterator[tuple[int, Outcome]]:
        """``(index in batch, outcome)`` as the sender has them: one by one from a streaming sender
        (``send_each``), all at the end from one that only has ``send``."""
        send_each = getattr(self.sender, "send_each", None)
        if send_each is not None:
            yield from send_each(batch)
        else:
            outcomes = list(self.sender.send(batch))
            if len(outcomes) != len(batch):  # which notification each answers for is unknown: none counts
                raise RuntimeError(f"the sender returned {len(outcomes)} outcomes for {len(batch)} notifications")
            yield from enumerate(outcomes)

    def _send_and_record(self, batch: list[Notification]) -> Counter:
        """Send, recording the outcomes as they come, ``record_every`` at a time: one transaction per
        outcome would cost several times the sending of a local email. An outcome missing (the sender
        failed or returned too few) is a retryable failure."""
        started = time.perf_counter()
        counts: Counter = Counter()
        unreported = dict(enumerate(batch))
        done: list[tuple[Notification, Outcome]] = []
        outcomes = self._outcomes(batch)
        failure = "the sender returned no outcome for this notification"
        while unreported:
            try:
                index, outcome = next(outcomes)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - a sender bug or a lost connection fails the rest, not the worker
                log.exception("%s: the %s sender failed a batch of %d", self.name, self.channel, len(batch))
                failure = f"{type(exc).__name__}: {exc}"[:2000]
                break
            notification = unreported.pop(index, None)
            if notification is not None:
                done.append((notification, outcome))
                if len(done) >= self.record_every:
                    counts += self.record(*map(list, zip(*done, strict=True)))
                    done = []
        if unreported:
            log.error("%s: no outcome for %d of a batch of %d", self.name, len(unreported), len(batch))
            done += [(notification, Outcome(ok=False, error=failure)) for notification in unreported.values()]
        if done:
            counts += self.record(*map(list, zip(*done, strict=True)))
        log.debug("%s: sent a batch of %d in %.3f s", self.name, len(batch), time.perf_counter() - started)
        return counts

    def record(self, batch: list[Notification], outcomes: list[Outcome]) -> Counter:
        """Record the attempt of each notification and its new status, with the events they cause;
        returns how many became sent, failed and dead."""
        now = utcnow()
        ids = [notification.id for notification in batch]
        query = select(Notification).where(Notification.id.in_(ids)).options(lazyload(Notification.attempts_log))
        if self.database.is_postgres:
            query = query.with_for_update()
        counts: Counter = Counter()
        with self.database.transaction() as session:
            rows = {row.id: row for row in session.scalars(query)}
            for sent, outcome in zip(batch, outcomes, strict=True):
                row = rows.get(sent.id)
                if row is None:
                    continue
                status = self._apply(session, row, sent, outcome, now)
                if status:
                    counts[status] += 1
        self.sent_count += counts["sent"]
        self.failed_count += counts["failed"]
        self.dead_count += counts["dead"]
        return counts

    def _apply(self, session: Session, row: Notification, sent: Notification, outcome: Outcome,
               now: dt.datetime) -> str | None:
        session.add(DeliveryAttempt(
            notification_id=row.id, attempted_at=now, outcome="sent" if outcome.ok else "failed",
            error=None if outcome.ok else (outcome.error or "delivery failed")[:4000],
            status_code=outcome.status_code, duration_ms=outcome.duration_ms,
        ))
        row.attempts = (row.attempts or 0) + 1
        row.claimed_until = None
        if sent.subject and not row.subject:
            row.subject = sent.subject[:500]  # the sender rendered it
        if row.status == "sent":
            return None  # delivered by another dispatcher meanwhile (its claim had expired)
        if outcome.ok:
            row.status = "sent"
            row.sent_at = now
            row.last_error = None
            events.publish(session, events.SENT, row)
            return "sent"
        row.last_error = (outcome.error or "delivery failed")[:4000]
        if not outcome.retryable or row.attempts >= self.max_attempts:
            row.status = "dead"
        else:
            row.status = "failed"
            row.next_attempt_at = now + dt.timedelta(
                seconds=retry_delay(row.attempts, self.base_delay, self.max_delay, self._rng))
        events.publish(session, events.FAILED, row)
        return row.status

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; the batch in hand is sent and recorded before returning."""
        backoff = Backoff(initial=0.5, maximum=30.0)
        log.info("%s: dispatching %s notifications", self.name, self.channel)
        try:
            while not stop.is_set():
                try:
                    handled = self.run_once()
                    backoff.reset()
                except SQLAlchemyError as exc:
                    delay = backoff.next()
                    log.error("%s: database error (%s); retrying in %.1f s", self.name, exc, delay)
                    stop.wait(delay)
                    continue
                except Exception:
                    delay = backoff.next()
                    log.exception("%s: unexpected error; retrying in %.1f s", self.name, delay)
                    stop.wait(delay)
                    continue
                if handled < self.batch_size:
                    stop.wait(self.poll_interval)
        finally:
            try:
                self.sender.close()
            except Exception:
                log.warning("%s: error while closing the sender", self.name, exc_info=True)
            log.info("%s: stopped", self.name)

"""The messaging tables keep what they need and no more: sent outbox rows and inbox rows past the
retention are deleted; unsent outbox rows never are."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import event, func, select, update

from shared.messaging.inbox import claim
from shared.messaging.retention import Retention, purge_inbox, purge_sent_outbox
from shared.timeutil import utcnow
from tests.support import wait_until

from .support import InboxMessage, OutboxMessage, Running, add_events


def count(db, model) -> int:
    with db.Session() as session:
        return session.scalar(select(func.count()).select_from(model))


def age_sent(db, days: float, seqs) -> None:
    with db.transaction() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.seq.in_(seqs))
                        .values(sent_at=utcnow() - dt.timedelta(days=days)))


def test_sent_rows_past_the_retention_go_and_unsent_ones_stay_however_old(db):
    add_events(db, 10, "refstd.test.retention.done")
    with db.Session() as session:
        seqs = session.scalars(select(OutboxMessage.seq).order_by(OutboxMessage.seq)).all()
    age_sent(db, 8, seqs[:4])  # sent 8 days ago: past a 7-day retention
    age_sent(db, 2, seqs[4:7])  # sent 2 days ago: kept
    with db.transaction() as session:  # never sent, and old: kept, the relay still has to publish it
        session.execute(update(OutboxMessage).where(OutboxMessage.seq.in_(seqs[7:]))
                        .values(created_at=utcnow() - dt.timedelta(days=30)))
    with db.transaction() as session:
        for index in range(3):
            claim(session, InboxMessage, f"old-{index}", "test.consumer")
            claim(session, InboxMessage, f"new-{index}", "test.consumer")
        session.execute(update(InboxMessage).where(InboxMessage.message_id.like("old-%"))
                        .values(processed_at=utcnow() - dt.timedelta(days=8)))

    assert Retention(db, OutboxMessage, InboxMessage, keep_days=7).run_once() == (4, 3)

    with db.Session() as session:
        left = session.scalars(select(OutboxMessage.seq).order_by(OutboxMessage.seq)).all()
        inbox = sorted(session.scalars(select(InboxMessage.message_id)).all())
    assert left == seqs[4:]
    assert inbox == ["new-0", "new-1", "new-2"]


def test_a_large_backlog_is_deleted_in_several_short_transactions(db):
    add_events(db, 25, "refstd.test.retention.done")
    with db.Session() as session:
        seqs = session.scalars(select(OutboxMessage.seq)).all()
    age_sent(db, 10, seqs)
    with db.transaction() as session:
        for index in range(25):
            claim(session, InboxMessage, f"old-{index}", "test.consumer")
        session.execute(update(InboxMessage).values(processed_at=utcnow() - dt.timedelta(days=8)))
    commits = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))
    assert purge_sent_outbox(db, OutboxMessage, dt.timedelta(days=7), batch=10) == 25
    assert len(commits) == 3  # 10, 10 and 5 rows
    assert purge_inbox(db, InboxMessage, dt.timedelta(days=7), batch=10) == 25
    assert len(commits) == 6
    assert count(db, OutboxMessage) == count(db, InboxMessage) == 0


def test_a_worker_told_to_stop_does_not_start_another_batch(db):
    add_events(db, 5, "refstd.test.retention.done")
    with db.Session() as session:
        seqs = session.scalars(select(OutboxMessage.seq)).all()
    age_sent(db, 10, seqs)
    stop = threading.Event()
    stop.set()
    assert purge_sent_outbox(db, OutboxMessage, dt.timedelta(days=7), batch=2, stop=stop) == 0
    assert count(db, OutboxMessage) == 5


def test_the_worker_component_purges_on_its_own_and_stops_when_told(db):
    add_events(db, 3, "refstd.test.retention.done")
    with db.Session() as session:
        seqs = session.scalars(select(OutboxMessage.seq)).all()
    age_sent(db, 10, seqs)
    stop = threading.Event()
    with Running(Retention(db, OutboxMessage, keep_days=7, interval=3600, first_delay=0.05), stop):
        wait_until(lambda: count(db, OutboxMessage) == 0, what="the retention component to purge")

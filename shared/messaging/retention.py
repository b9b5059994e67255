"""How long the messaging tables keep what they no longer need (MESSAGE_RETENTION_DAYS, 7 by default).

- **outbox** rows the relay has sent: kept so that an operator can publish them again after restoring
  a consumer's database from a backup (docs/operations.md), then deleted.
- **inbox** rows: they make a redelivered message a no-op. The broker redelivers within minutes (a
  lost connection, a retry tier of at most a minute); a dead letter was never recorded, so replaying
  it later does not need its row. A week is ample.

Without this both tables grow by every event, forever. :class:`Retention` is a worker component that
deletes in short transactions once an hour; several replicas doing the same delete is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import delete, select, tuple_

from shared.db import Database
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

#: Rows deleted per transaction, so that a first purge of a large table holds no long lock.
BATCH = 5000


def purge_sent_outbox(database: Database, model: type, older_than: dt.timedelta, batch: int = BATCH,
                      stop: threading.Event | None = None) -> int:
    """Delete outbox rows sent more than ``older_than`` ago (never an unsent row); returns how many."""
    cutoff = utcnow() - older_than
    chosen = select(model.seq).where(model.sent_at.is_not(None), model.sent_at < cutoff).limit(batch)
    return _in_batches(database, delete(model).where(model.seq.in_(chosen)), batch, stop)


def purge_inbox(database: Database, model: type, older_than: dt.timedelta, batch: int = BATCH,
                stop: threading.Event | None = None) -> int:
    """Delete inbox rows recorded more than ``older_than`` ago; returns how many."""
    key = tuple_(model.message_id, model.consumer)
    chosen = (select(model.message_id, model.consumer)
              .where(model.processed_at < utcnow() - older_than).limit(batch))
    return _in_batches(database, delete(model).where(key.in_(chosen)), batch, stop)


def _in_batches(database: Database, statement, batch: int, stop: threading.Event | None) -> int:
    """Run a DELETE of at most ``batch`` rows, each time in its own transaction, until it deletes fewer
    (or ``stop`` is set: a worker told to stop does not finish a long first purge first)."""
    total = 0
    while stop is None or not stop.is_set():
        with database.transaction() as session:
            deleted = session.execute(statement).rowcount
        total += deleted
        if deleted < batch:
            break
    return total


class Retention:
    """Worker component: purges the service's outbox (and inbox, if it has one) every ``interval`` seconds,
    the first time ``first_delay`` seconds after the start."""

    def __init__(self, database: Database, outbox_model: type, inbox_model: type | None = None, *,
                 keep_days: float = 7, interval: float = 3600, first_delay: float = 60,
                 name: str = "retention") -> None:
        self.database = database
        self.outbox_model = outbox_model
        self.inbox_model = inbox_model
        self.keep = dt.timedelta(days=keep_days)
        self.interval = interval
        self.first_delay = first_delay
        self.name = name

    def run_once(self, stop: threading.Event | None = None) -> tuple[int, int]:
        """(outbox rows, inbox rows) deleted."""
        sent = purge_sent_outbox(self.database, self.outbox_model, self.keep, stop=stop)
        seen = 0
        if self.inbox_model is not None:
            seen = purge_inbox(self.database, self.inbox_model, self.keep, stop=stop)
        if sent or seen:
            log.info("%s: deleted %s sent outbox rows and %s inbox rows older than %s", self.name, sent, seen,
                     self.keep)
        return sent, seen

    def run(self, stop: threading.Event) -> None:
        delay = self.first_delay
        while not stop.wait(delay):
            try:
                self.run_once(stop)
            except Exception:  # noqa: BLE001 - a failed purge is retried at the next round, never fatal
                log.exception("%s: purge failed; trying again in %s s", self.name, self.interval)
            delay = self.interval

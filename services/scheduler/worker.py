"""The scheduler's worker process: ``python -m services.scheduler.worker``.

Runs the outbox relay, the consumer of inventory events (the read models), the timed jobs (the daily
due sweep at SWEEP_CRON, institute time, and the booking reminders every few minutes) and the
retention of the outbox and inbox.
APScheduler runs here only, never in a web process (architecture.md, "Scheduling rules").
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from services.scheduler import events
from services.scheduler.models import InboxMessage, OutboxMessage
from services.topology import ALL_QUEUES
from shared.config import Settings, env_flag
from shared.db import Database
from shared.logs import configure_logging
from shared.messaging.consumer import Consumer
from shared.messaging.relay import OutboxRelay
from shared.messaging.retention import Retention
from shared.messaging.worker import run_components
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

DAY = 24 * 3600


class TimedJobs:
    """The APScheduler jobs, as a worker component. Every job is idempotent (keys in the database),
    so a second replica or a rerun after a restart emits nothing twice."""

    name = "scheduler.jobs"

    def __init__(self, database: Database, settings: Settings, startup_delay: float = 15) -> None:
        self.database = database
        self.settings = settings
        self.startup_delay = startup_delay

    def sweep(self, trigger: str) -> None:
        from services.scheduler.sweep import sweep_now

        result = sweep_now(self.database, self.settings, trigger=trigger)
        log.info("due sweep (%s): %s items scanned, %s notices emitted", trigger,
                 result.items_scanned, result.notices_emitted)

    def reminders(self) -> None:
        from services.scheduler.bookings import send_booking_reminders
        from services.scheduler.policy import load_policy

        with self.database.transaction() as session:
            policy = load_policy(session)
            sent = send_booking_reminders(session, utcnow(), policy["booking_reminder_hours"])
        if sent:
            log.info("booking reminders: %s sent", sent)

    def sample_bookings(self) -> None:
        """Load the sample bookings once the read model has the sample standards (``make run``)."""
        from services.scheduler.demo import load_sample_bookings

        with self.database.transaction() as session:
            made = load_sample_bookings(session, utcnow(), self.settings.institute_tz)
        if made is not None:
            log.info("sample bookings: %s made", made)
            self._scheduler.remove_job("sample_bookings")

    def run(self, stop: threading.Event) -> None:
        scheduler = BackgroundScheduler(
            timezone=self.settings.institute_tz,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": DAY},
        )
        scheduler.add_job(self.sweep, CronTrigger.from_crontab(self.settings.sweep_cron,
                                                               timezone=self.settings.institute_tz),
                          args=["cron"], id="due_sweep", replace_existing=True)
        scheduler.add_job(self.reminders, IntervalTrigger(seconds=self.settings.reminder_interval_seconds),
                          id="booking_reminders", replace_existing=True,
                          misfire_grace_time=self.settings.reminder_interval_seconds)
        # Catch up at start: a sweep or reminders missed while the worker was down go out now (each
        # notice key and reminder once, ever, so this is harmless when nothing was missed). The short
        # delay lets the consumer take in the events that arrived while the worker was down first.
        scheduler.add_job(self.sweep, DateTrigger(utcnow() + dt.timedelta(seconds=self.startup_delay)),
                          args=["startup"], id="startup_sweep", replace_existing=True)
        if env_flag("REFSTD_SAMPLE_BOOKINGS"):
            scheduler.add_job(self.sample_bookings, IntervalTrigger(seconds=5), id="sample_bookings",
                              replace_existing=True)
        self._scheduler = scheduler
        scheduler.start()
        try:
            self.reminders()
            stop.wait()
        finally:
            scheduler.shutdown(wait=True)


def components(settings: Settings, database: Database) -> list:
    return [
        OutboxRelay(database, OutboxMessage, settings.amqp_url, name="scheduler.relay"),
        Consumer(database, InboxMessage, settings.amqp_url, events.INVENTORY_QUEUE, events.INVENTORY_HANDLERS,
                 name="scheduler.inventory", schemas=events.INVENTORY_SCHEMAS),
        TimedJobs(database, settings),
        Retention(database, OutboxMessage, InboxMessage, keep_days=settings.message_retention_days,
                  name="scheduler.retention"),
    ]


def main() -> int:
    settings = Settings("scheduler")
    configure_logging("scheduler-worker", settings.log_level, settings.log_json)
    run_components(components(settings, Database(settings.database_url)), settings.amqp_url, queues=ALL_QUEUES)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

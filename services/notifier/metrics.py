"""The notifier's delivery metrics, read from its database when Prometheus scrapes ``/metrics``.

The dispatchers run in the worker process, which serves no HTTP; the database is what every process
shares, so the figures are computed from it on scrape (a few aggregate queries on indexed columns):

- ``refstd_notifier_notifications_sent_total{channel}`` (counter): notifications delivered;
- ``refstd_notifier_delivery_failures_total{channel}`` (counter): failed delivery attempts;
- ``refstd_notifier_notifications{channel,status}`` (gauge): notifications by status now, ``dead``
  included (a gauge: a manual retry takes one out of ``dead``);
- ``refstd_notifier_retry_backlog{channel}`` (gauge): pending or failed notifications due now;
- ``refstd_notifier_oldest_pending_age_seconds{channel}`` (gauge): age of the oldest notification not
  yet delivered (pending or failed), 0 when there is none.
"""

from __future__ import annotations

import datetime as dt
import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import REGISTRY
from sqlalchemy import func, select

from services.notifier.models import CHANNELS, STATUSES, DeliveryAttempt, Notification
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

UNDELIVERED = ("pending", "failed")


class NotifierCollector:
    """A Prometheus collector reading the notifier's database (read-only)."""

    def __init__(self, database=None) -> None:
        self.database = database

    def bind(self, database) -> None:
        self.database = database

    def describe(self):
        return []  # computed on scrape; nothing to check at registration

    def collect(self):
        if self.database is None:
            return
        try:
            figures = self._read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is away
            log.warning("notifier metrics: the database could not be read", exc_info=True)
            up = GaugeMetricFamily("refstd_notifier_metrics_up", "1 when the delivery metrics could be read")
            up.add_metric([], 0)
            yield up
            return
        by_status, failures, backlog, oldest, now = figures
        up = GaugeMetricFamily("refstd_notifier_metrics_up", "1 when the delivery metrics could be read")
        up.add_metric([], 1)
        yield up
        sent = CounterMetricFamily("refstd_notifier_notifications_sent", "Notifications delivered",
                                   labels=["channel"])
        failed = CounterMetricFamily("refstd_notifier_delivery_failures", "Failed delivery attempts",
                                     labels=["channel"])
        current = GaugeMetricFamily("refstd_notifier_notifications", "Notifications by status",
                                    labels=["channel", "status"])
        due = GaugeMetricFamily("refstd_notifier_retry_backlog", "Pending or failed notifications due now",
                                labels=["channel"])
        age = GaugeMetricFamily("refstd_notifier_oldest_pending_age_seconds",
                                "Age of the oldest notification not yet delivered", labels=["channel"])
        for channel in CHANNELS:
            sent.add_metric([channel], by_status.get((channel, "sent"), 0))
            failed.add_metric([channel], failures.get(channel, 0))
            for status in STATUSES:
                current.add_metric([channel, status], by_status.get((channel, status), 0))
            due.add_metric([channel], backlog.get(channel, 0))
            first = oldest.get(channel)
            age.add_metric([channel], max(0.0, (now - first).total_seconds()) if first else 0.0)
        yield from (sent, failed, current, due, age)

    def _read(self):
        now = utcnow()
        with self.database.Session() as session:
            by_status = {(row.channel, row.status): row.n for row in session.execute(
                select(Notification.channel, Notification.status, func.count().label("n"))
                .group_by(Notification.channel, Notification.status))}
            failures = {row.channel: row.n for row in session.execute(
                select(Notification.channel, func.count().label("n"))
                .select_from(DeliveryAttempt).join(Notification, Notification.id == DeliveryAttempt.notification_id)
                .where(DeliveryAttempt.outcome == "failed").group_by(Notification.channel))}
            backlog = {row.channel: row.n for row in session.execute(
                select(Notification.channel, func.count().label("n"))
                .where(Notification.status.in_(UNDELIVERED), Notification.next_attempt_at <= now)
                .group_by(Notification.channel))}
            oldest = {}
            for row in session.execute(
                    select(Notification.channel, func.min(Notification.created_at).label("first"))
                    .where(Notification.status.in_(UNDELIVERED)).group_by(Notification.channel)):
                oldest[row.channel] = _aware(row.first)
        return by_status, failures, backlog, oldest, now


def _aware(value):
    """An aware UTC instant, whatever the driver gave back for an aggregate."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


_COLLECTOR = NotifierCollector()
_registered = False


def register(database) -> NotifierCollector:
    """Read ``database`` on every scrape of the process's default registry (one collector per process:
    the app created last is the one measured)."""
    global _registered
    _COLLECTOR.bind(database)
    if not _registered:
        REGISTRY.register(_COLLECTOR)
        _registered = True
    return _COLLECTOR

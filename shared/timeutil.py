"""Time: instants are stored in UTC; calendar dates people think in are in the institute's zone."""

from __future__ import annotations

import calendar
import datetime as dt
from zoneinfo import ZoneInfo


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def institute_zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def today_in(zone: str | ZoneInfo, now: dt.datetime | None = None) -> dt.date:
    """The calendar date it is now in the given zone (the institute's 'today')."""
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    return (now or utcnow()).astimezone(tz).date()


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar-month arithmetic, clamping to the month's last day (2024-01-31 + 1 month = 2024-02-29)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def add_years(day: dt.date, years: int) -> dt.date:
    return add_months(day, 12 * years)


def institute_today(now: dt.datetime | None = None) -> dt.date:
    """Today in the institute's time zone (``INSTITUTE_TZ``, default Asia/Shanghai)."""
    import os

    return today_in(os.environ.get("INSTITUTE_TZ") or "Asia/Shanghai", now)

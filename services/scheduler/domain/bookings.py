"""Booking rules: time held, conflicts, availability, who may book, status transitions, and why a
standard cannot be booked. Plain functions on plain values (no Flask, no database).

Time is half-open everywhere: a booking ``[starts_at, ends_at)`` holds its standard over
``[starts_at, ends_at + recovery)``, a blackout over ``[starts_at, ends_at)``; two holds conflict when
they share an instant, so back-to-back reservations do not.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

ACTIVE_STATUSES = ("pending", "confirmed")
BOOKING_STATUSES = ("pending", "confirmed", "rejected", "cancelled")
BLACKOUT_STATUSES = ("confirmed", "cancelled")

#: The longest booking: a month of work on one standard; longer absences are blackouts.
MAX_BOOKING_LENGTH = dt.timedelta(days=31)
#: The longest blackout (a standard away for calibration or repair).
MAX_BLACKOUT_LENGTH = dt.timedelta(days=366)
#: How far ahead a reservation may start (an assessment certificate lasts four years anyway).
BOOKING_HORIZON = dt.timedelta(days=5 * 365)
#: The widest window the availability query answers for.
MAX_AVAILABILITY_WINDOW = dt.timedelta(days=92)

#: Roles that may book, and the status their booking starts in.
INITIAL_STATUS_BY_ROLE = {"admin": "confirmed", "lab_staff": "confirmed", "partner": "pending"}
STAFF_ROLES = ("admin", "lab_staff")

#: action -> (statuses it applies to, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": (("pending",), "confirmed"),
    "reject": (("pending",), "rejected"),
    "cancel": (("pending", "confirmed"), "cancelled"),
}


class InvalidTimes(ValueError):
    """Bad timestamps, keyed by field name (what a 422 names)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


class InvalidTransition(ValueError):
    def __init__(self, status: str, action: str, detail: str | None = None) -> None:
        super().__init__(detail or f"A {status} booking cannot be {_PAST_TENSE.get(action, action)}.")
        self.status = status
        self.action = action


_PAST_TENSE = {"approve": "approved", "reject": "rejected", "cancel": "cancelled"}


@dataclass(frozen=True)
class Hold:
    """Time an active reservation keeps: ``[starts_at, held_until)``."""

    kind: str  # booking | blackout
    id: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    held_until: dt.datetime


# -- instants ------------------------------------------------------------------------------------

def as_utc(value: dt.datetime, field: str) -> dt.datetime:
    """The instant in UTC; a naive timestamp (no offset) or one outside the calendar is refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidTimes({field: "must carry a UTC offset (RFC 3339), e.g. 2031-03-02T09:00:00+08:00"})
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidTimes({field: "is out of range"}) from None


def held_until(kind: str, ends_at: dt.datetime, recovery_minutes: int) -> dt.datetime:
    """The end of the time a reservation holds: bookings add the standard's recovery time."""
    if kind == "booking" and recovery_minutes:
        return ends_at + dt.timedelta(minutes=recovery_minutes)
    return ends_at


def overlaps(a_start: dt.datetime, a_end: dt.datetime, b_start: dt.datetime, b_end: dt.datetime) -> bool:
    """Whether two half-open intervals share an instant (touching ends do not)."""
    return a_start < b_end and b_start < a_end


def conflicts(starts_at: dt.datetime, until: dt.datetime, holds: Iterable[Hold],
              ignore_id: str | None = None) -> list[Hold]:
    """The holds that ``[starts_at, until)`` overlaps, earliest first."""
    found = [h for h in holds if h.id != ignore_id and overlaps(starts_at, until, h.starts_at, h.held_until)]
    return sorted(found, key=lambda h: (h.starts_at, h.id))


def free_intervals(window_start: dt.datetime, window_end: dt.datetime,
                   held: Iterable[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    """``[window_start, window_end)`` minus the held intervals, as sorted disjoint free intervals."""
    free = []
    cursor = window_start
    for start, end in sorted(held):
        if end <= cursor:
            continue
        if start >= window_end:
            break
        if start > cursor:
            free.append((cursor, start))
        cursor = max(cursor, end)
        if cursor >= window_end:
            break
    if cursor < window_end:
        free.append((cursor, window_end))
    return free


# -- validation of requested times ----------------------------------------------------------------

def _ordered(starts_at: dt.datetime, ends_at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    errors = {}
    try:
        starts_at = as_utc(starts_at, "starts_at")
    except InvalidTimes as exc:
        errors.update(exc.errors)
    try:
        ends_at = as_utc(ends_at, "ends_at")
    except InvalidTimes as exc:
        errors.update(exc.errors)
    if errors:
        raise InvalidTimes(errors)
    if ends_at <= starts_at:
        raise InvalidTimes({"ends_at": "must be after starts_at"})
    return starts_at, ends_at


def check_booking_times(starts_at: dt.datetime, ends_at: dt.datetime,
                        now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """A booking's times in UTC: ordered, not in the past, at most 31 days long, at most 5 years ahead."""
    starts_at, ends_at = _ordered(starts_at, ends_at)
    errors = {}
    if starts_at < now:
        errors["starts_at"] = "must not be in the past"
    elif starts_at > now + BOOKING_HORIZON:
        errors["starts_at"] = f"must be at most {BOOKING_HORIZON.days} days ahead"
    if ends_at - starts_at > MAX_BOOKING_LENGTH:
        errors["ends_at"] = f"a booking lasts at most {MAX_BOOKING_LENGTH.days} days"
    if errors:
        raise InvalidTimes(errors)
    return starts_at, ends_at


def check_blackout_times(starts_at: dt.datetime, ends_at: dt.datetime,
                         now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """A blackout's times in UTC: ordered, not over yet (it may have begun), at most 366 days long,
    starting at most 5 years ahead."""
    starts_at, ends_at = _ordered(starts_at, ends_at)
    errors = {}
    if ends_at <= now:
        errors["ends_at"] = "must be in the future"
    if starts_at > now + BOOKING_HORIZON:
        errors["starts_at"] = f"must be at most {BOOKING_HORIZON.days} days ahead"
    if ends_at - starts_at > MAX_BLACKOUT_LENGTH:
        errors["ends_at"] = f"a blackout lasts at most {MAX_BLACKOUT_LENGTH.days} days"
    if errors:
        raise InvalidTimes(errors)
    return starts_at, ends_at


def check_window(window_start: dt.datetime, window_end: dt.datetime, *, start_field: str = "from",
                 end_field: str = "to",
                 longest: dt.timedelta | None = MAX_AVAILABILITY_WINDOW) -> tuple[dt.datetime, dt.datetime]:
    """A query window in UTC: ``to`` after ``from``, at most ``longest`` wide."""
    errors = {}
    try:
        window_start = as_utc(window_start, start_field)
    except InvalidTimes as exc:
        errors.update(exc.errors)
    try:
        window_end = as_utc(window_end, end_field)
    except InvalidTimes as exc:
        errors.update(exc.errors)
    if errors:
        raise InvalidTimes(errors)
    if window_end <= window_start:
        raise InvalidTimes({end_field: f"must be after {start_field}"})
    if longest is not None and window_end - window_start > longest:
        raise InvalidTimes({end_field: f"the window is at most {longest.days} days wide"})
    return window_start, window_end


# -- who may book, and what happens next -----------------------------------------------------------

def initial_status(role: str) -> str | None:
    """The status a new booking by this role starts in; None when the role may not book."""
    return INITIAL_STATUS_BY_ROLE.get(role)


def is_staff(role: str) -> bool:
    return role in STAFF_ROLES


def is_own(client_id: str, organization_id: str | None, requested_by_client: str,
           requested_by_org: str | None) -> bool:
    """Whether a booking belongs to the caller: same organization, or same client when it has none."""
    if organization_id is not None:
        return requested_by_org == organization_id
    return requested_by_client == client_id


def transition(status: str, action: str) -> str:
    """The status after ``action`` (approve | reject | cancel), or InvalidTransition."""
    allowed, target = TRANSITIONS[action]
    if status not in allowed:
        raise InvalidTransition(status, action)
    return target


# -- can the standard be booked until the booking ends? --------------------------------------------

def end_of_validity(last_valid_day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """The instant a date-bounded validity ends: midnight (local) starting the day after, in UTC.

    A certificate valid through D, or a calibration due on D, covers use up to D+1 00:00 local time
    (inventory: an item is valid on its due date and overdue from the next day).
    """
    if last_valid_day >= dt.date.max:
        return dt.datetime.max.replace(tzinfo=dt.UTC)
    next_day = last_valid_day + dt.timedelta(days=1)
    return dt.datetime.combine(next_day, dt.time(0), tzinfo=zone).astimezone(dt.UTC)


def unavailability_reasons(*, bookable: bool, status: str, certificate_expires_on: dt.date | None,
                           equipment: Iterable[tuple[str, dt.date | None]], ends_at: dt.datetime,
                           zone: ZoneInfo) -> list[str]:
    """Why the standard cannot be booked until ``ends_at``; empty when it can.

    Reason codes: ``not_bookable``, ``status_<status>``, ``assessment_certificate_missing``,
    ``assessment_certificate_expires:<date>`` (the certificate ends before the booking does),
    ``equipment_never_calibrated:<id>`` and ``equipment_due:<id>:<date>`` (a calibration falls due
    before the booking ends), equipment sorted by id so equal facts give equal lists.
    """
    ends_at = as_utc(ends_at, "ends_at")
    reasons = []
    if not bookable:
        reasons.append("not_bookable")
    if status != "in_service":
        reasons.append(f"status_{status}")
    if certificate_expires_on is None:
        reasons.append("assessment_certificate_missing")
    elif ends_at > end_of_validity(certificate_expires_on, zone):
        reasons.append(f"assessment_certificate_expires:{certificate_expires_on.isoformat()}")
    for equipment_id, due_on in sorted(equipment, key=lambda item: str(item[0])):
        if due_on is None:
            reasons.append(f"equipment_never_calibrated:{equipment_id}")
        elif ends_at > end_of_validity(due_on, zone):
            reasons.append(f"equipment_due:{equipment_id}:{due_on.isoformat()}")
    return reasons

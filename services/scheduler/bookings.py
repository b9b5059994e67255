"""Booking transactions: create, approve, reject, cancel, blackouts, the cancellations that follow a
standard becoming unusable, and booking reminders.

Functions here work in the caller's transaction and never commit: the HTTP layer commits after a
request's work, the event consumer and the worker after theirs, so each change and the events it
causes (outbox rows) are one transaction.

No double booking, even under concurrent requests:
- PostgreSQL: the exclusion constraint ``reservations_no_overlap`` refuses a second active
  reservation whose ``[starts_at, held_until)`` overlaps (SQLSTATE 23P01). We also check first, in the
  same transaction, so the usual case gets a precise answer; the constraint decides races.
- SQLite: every transaction begins with ``BEGIN IMMEDIATE`` (shared/db.py), so writers run one at a
  time and the check-then-insert below cannot interleave with another writer's.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.scheduler import events
from services.scheduler.domain import bookings as rules
from services.scheduler.models import KnownOrganization, KnownStandard, Reservation, TrackedItem
from shared.db import is_postgres
from shared.timeutil import utcnow

EXCLUSION_VIOLATION = "23P01"
SYSTEM = "system"


def clock() -> dt.datetime:
    """Now, for the HTTP layer (tests replace it to freeze time)."""
    return utcnow()


def institute_zone() -> ZoneInfo:
    return ZoneInfo(os.environ.get("INSTITUTE_TZ") or "Asia/Shanghai")


def canonical_id(value) -> str | None:
    """An id in its stored form (ids are UUIDs), or None when ``value`` cannot be one: it names nothing."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


# -- errors the HTTP layer maps to answers --------------------------------------------------------

class UnknownStandard(LookupError):
    """The standard is not in the read model (or not visible to this caller)."""


class BookingConflict(Exception):
    def __init__(self, holds: list[rules.Hold]) -> None:
        super().__init__("The requested time overlaps reservations of this standard.")
        self.holds = holds

    def body(self) -> list[dict]:
        return [{"kind": h.kind, "id": h.id, "starts_at": h.starts_at, "ends_at": h.ends_at,
                 "held_until": h.held_until} for h in self.holds]


class StandardUnavailable(Exception):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__("The standard cannot be booked for this time: " + ", ".join(reasons))
        self.reasons = reasons


@dataclass(frozen=True)
class Caller:
    """Who acts: a client id, its role and organization (the token's sub, role and org)."""

    client_id: str
    role: str
    organization_id: str | None = None


# -- reading --------------------------------------------------------------------------------------

def standard_visible_to(session: Session, standard_id: str, role: str, *,
                        lock: bool = False) -> KnownStandard:
    """The standard, or UnknownStandard; partners see public standards only (as in the catalogue).

    ``lock`` takes a shared row lock (PostgreSQL) so that a concurrent status change, which updates
    this row and then cancels the standard's bookings, either waits for this booking's commit (and
    then cancels it) or is seen by it.
    """
    canonical = canonical_id(standard_id)
    if canonical is None:
        raise UnknownStandard(standard_id)
    query = select(KnownStandard).where(KnownStandard.id == canonical)
    if lock:
        query = query.with_for_update(read=True)
    standard = session.scalar(query)
    if standard is None or (role == "partner" and not standard.public):
        raise UnknownStandard(standard_id)
    return standard


def reasons_unavailable(session: Session, standard: KnownStandard, ends_at: dt.datetime) -> list[str]:
    """Why ``standard`` cannot be booked until ``ends_at`` (domain rule 5)."""
    equipment = session.execute(
        select(TrackedItem.item_id, TrackedItem.due_on).where(
            TrackedItem.item_kind == "equipment", TrackedItem.standard_id == standard.id,
            TrackedItem.active.is_(True))).all()
    return rules.unavailability_reasons(
        bookable=standard.bookable, status=standard.status,
        certificate_expires_on=standard.certificate_expires_on,
        equipment=[(row.item_id, row.due_on) for row in equipment], ends_at=ends_at, zone=institute_zone())


def _hold(reservation: Reservation) -> rules.Hold:
    return rules.Hold(reservation.kind, reservation.id, reservation.starts_at, reservation.ends_at,
                      reservation.held_until)


def active_holds(session: Session, standard_id: str, starts_at: dt.datetime,
                 until: dt.datetime) -> list[rules.Hold]:
    """Active reservations of the standard whose held time overlaps ``[starts_at, until)``."""
    conditions = [Reservation.standard_id == standard_id, Reservation.status.in_(rules.ACTIVE_STATUSES),
                  Reservation.starts_at < until, Reservation.held_until > starts_at]
    if is_postgres(session):
        # The same overlap as a range test, which the exclusion constraint's GiST index answers: without it
        # PostgreSQL reads every earlier reservation (all of them start before ``until``).
        conditions.append(func.tstzrange(Reservation.starts_at, Reservation.held_until, "[)").op("&&")(
            func.tstzrange(literal(starts_at, Reservation.starts_at.type),
                           literal(until, Reservation.held_until.type), "[)")))
    rows = session.scalars(
        select(Reservation).where(*conditions).order_by(Reservation.starts_at, Reservation.id)).all()
    return rules.conflicts(starts_at, until, [_hold(r) for r in rows])


def free_intervals(session: Session, standard_id: str, window_start: dt.datetime,
                   window_end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    holds = active_holds(session, standard_id, window_start, window_end)
    return rules.free_intervals(window_start, window_end, [(h.starts_at, h.held_until) for h in holds])


# -- representations ------------------------------------------------------------------------------

def booking_view(reservation: Reservation) -> dict:
    """A booking as the API and the events show it."""
    return {
        "id": reservation.id,
        "standard_id": reservation.standard_id,
        "requested_by": {"client_id": reservation.requested_by_client,
                         "organization_id": reservation.requested_by_org},
        "starts_at": reservation.starts_at,
        "ends_at": reservation.ends_at,
        "held_until": reservation.held_until,
        "purpose": reservation.purpose,
        "status": reservation.status,
        "decided_by": reservation.decided_by,
        "reason": reservation.reason,
        "sequence": reservation.sequence,
        "created_at": reservation.created_at,
        "updated_at": reservation.updated_at,
    }


def booking_event(session: Session, reservation: Reservation, standard: KnownStandard | None = None) -> dict:
    """The payload of booking.* events: enough to tell the requester and the custodian, no call back."""
    standard = standard or session.get(KnownStandard, reservation.standard_id)
    data = booking_view(reservation)
    data.update(
        standard_name=standard.name if standard else None,
        standard_code=standard.code if standard else None,
        lab=standard.lab if standard else None,
        custodian_email=standard.custodian_email if standard else None,
        requester=requester(session, reservation),
    )
    return data


def requester(session: Session, reservation: Reservation) -> dict:
    """Whom to tell: the requesting organization with its contacts, else the bare client."""
    if reservation.requested_by_org is None:
        return {"kind": "client", "organization_id": None, "name": reservation.requested_by_client,
                "name_en": None, "contacts": []}
    organization = session.get(KnownOrganization, reservation.requested_by_org)
    return {
        "kind": "organization",
        "organization_id": reservation.requested_by_org,
        "name": organization.name if organization else None,
        "name_en": organization.name_en if organization else None,
        "contacts": list(organization.contacts or []) if organization else [],
    }


def _publish(session: Session, name: str, reservation: Reservation,
             standard: KnownStandard | None = None) -> None:
    session.flush()  # timestamps and defaults filled in before they are copied into the payload
    events.publish(session, name, reservation.id, booking_event(session, reservation, standard))


# -- writing --------------------------------------------------------------------------------------

def _insert(session: Session, reservation: Reservation) -> None:
    """Add an active reservation; BookingConflict when it overlaps another (checked, then enforced)."""
    # On SQLite this check and the insert below run under the transaction's write lock (BEGIN
    # IMMEDIATE): no other writer can slip in between. On PostgreSQL the constraint settles races.
    found = active_holds(session, reservation.standard_id, reservation.starts_at, reservation.held_until)
    if found:
        raise BookingConflict(found)
    try:
        # Leaving the savepoint flushes: the exclusion constraint decides a race here (PostgreSQL); on
        # failure only the savepoint is rolled back, so the transaction can still read the winner.
        with session.begin_nested():
            session.add(reservation)
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) != EXCLUSION_VIOLATION:
            raise
        # The winner has committed (the constraint waited for it): read it for the answer.
        raise BookingConflict(active_holds(session, reservation.standard_id, reservation.starts_at,
                                           reservation.held_until)) from None


def create_booking(session: Session, caller: Caller, *, standard_id: str, starts_at: dt.datetime,
                   ends_at: dt.datetime, purpose: str | None, now: dt.datetime) -> Reservation:
    """Book a standard: staff bookings are confirmed at once, partner bookings wait for approval.

    Raises rules.InvalidTimes, UnknownStandard, StandardUnavailable, BookingConflict; publishes
    ``booking.confirmed`` or ``booking.requested``.
    """
    status = rules.initial_status(caller.role)
    if status is None:
        raise PermissionError(f"role {caller.role} may not book")
    starts_at, ends_at = rules.check_booking_times(starts_at, ends_at, now)
    standard = standard_visible_to(session, standard_id, caller.role, lock=True)
    reasons = reasons_unavailable(session, standard, ends_at)
    if reasons:
        raise StandardUnavailable(reasons)
    booking = Reservation(
        kind="booking", standard_id=standard.id, starts_at=starts_at, ends_at=ends_at,
        held_until=rules.held_until("booking", ends_at, standard.recovery_minutes), status=status,
        purpose=purpose, requested_by_client=caller.client_id, requested_by_org=caller.organization_id,
        decided_by=caller.client_id if status == "confirmed" else None, sequence=0, created_at=now,
        updated_at=now)
    _insert(session, booking)
    event = "booking.confirmed" if status == "confirmed" else "booking.requested"
    _publish(session, event, booking, standard)
    return booking


def create_blackout(session: Session, caller: Caller, standard: KnownStandard, *, starts_at: dt.datetime,
                    ends_at: dt.datetime, reason: str, now: dt.datetime) -> Reservation:
    """Take a standard out of booking for a while (maintenance, away for calibration)."""
    starts_at, ends_at = rules.check_blackout_times(starts_at, ends_at, now)
    blackout = Reservation(
        kind="blackout", standard_id=standard.id, starts_at=starts_at, ends_at=ends_at, held_until=ends_at,
        status="confirmed", reason=reason, requested_by_client=caller.client_id,
        requested_by_org=caller.organization_id, decided_by=caller.client_id, sequence=0, created_at=now,
        updated_at=now)
    _insert(session, blackout)
    return blackout


def find_reservation(session: Session, reservation_id: str, kind: str) -> Reservation | None:
    reservation_id = canonical_id(reservation_id)
    if reservation_id is None:
        return None
    return session.scalar(select(Reservation)
                          .where(Reservation.id == reservation_id, Reservation.kind == kind))


def lock_reservation(session: Session, reservation_id: str, kind: str) -> Reservation | None:
    """The reservation, locked for a change (None when there is none of that kind).

    Locks are taken in one order everywhere: the standard's row (shared), then its reservations, as
    the status-change handler does (it updates the standard, then cancels its bookings); so a decision
    and a status change arriving together wait for each other instead of deadlocking.
    """
    reservation_id = canonical_id(reservation_id)
    if reservation_id is None:
        return None
    standard_id = session.scalar(select(Reservation.standard_id).where(Reservation.id == reservation_id,
                                                                       Reservation.kind == kind))
    if standard_id is None:
        return None
    session.execute(select(KnownStandard.id).where(KnownStandard.id == standard_id)
                    .with_for_update(read=True))
    return session.scalar(select(Reservation)
                          .where(Reservation.id == reservation_id, Reservation.kind == kind)
                          .with_for_update())


def _decide(reservation: Reservation, action: str, *, by: str, reason: str | None, now: dt.datetime) -> None:
    reservation.status = rules.transition(reservation.status, action)
    reservation.decided_by = by
    if action != "approve":
        reservation.reason = reason
    reservation.sequence += 1
    reservation.updated_at = now


def _refuse_if_ended(reservation: Reservation, action: str, now: dt.datetime) -> None:
    if reservation.ends_at <= now:
        raise rules.InvalidTransition(reservation.status, action,
                                      "The booking has already ended; its record is kept as it is.")


def approve(session: Session, booking: Reservation, caller: Caller, now: dt.datetime) -> Reservation:
    """pending -> confirmed, if the standard can still be booked until the booking ends."""
    rules.transition(booking.status, "approve")
    _refuse_if_ended(booking, "approve", now)
    standard = session.scalar(select(KnownStandard).where(KnownStandard.id == booking.standard_id)
                              .with_for_update(read=True))
    reasons = reasons_unavailable(session, standard, booking.ends_at) if standard else ["standard_unknown"]
    if reasons:
        raise StandardUnavailable(reasons)
    _decide(booking, "approve", by=caller.client_id, reason=None, now=now)
    _publish(session, "booking.confirmed", booking, standard)
    return booking


def reject(session: Session, booking: Reservation, caller: Caller, reason: str,
           now: dt.datetime) -> Reservation:
    """pending -> rejected, with the reason."""
    _decide(booking, "reject", by=caller.client_id, reason=reason, now=now)
    _publish(session, "booking.rejected", booking)
    return booking


def cancel(session: Session, booking: Reservation, caller: Caller, reason: str | None,
           now: dt.datetime) -> Reservation:
    """pending|confirmed -> cancelled, as long as the booking has not ended."""
    rules.transition(booking.status, "cancel")
    _refuse_if_ended(booking, "cancel", now)
    _decide(booking, "cancel", by=caller.client_id, reason=reason, now=now)
    _publish(session, "booking.cancelled", booking)
    return booking


def cancel_blackout(blackout: Reservation, caller: Caller, now: dt.datetime) -> bool:
    """Lift a blackout (kept, as cancelled, for history). False when it was already lifted."""
    if blackout.status == "cancelled":
        return False
    blackout.status = "cancelled"
    blackout.decided_by = caller.client_id
    blackout.sequence += 1
    blackout.updated_at = now
    return True


# -- when a standard stops being usable -------------------------------------------------------------

def _cancel_all(session: Session, bookings: list[Reservation], reason: str,
                now: dt.datetime) -> list[Reservation]:
    for booking in bookings:
        _decide(booking, "cancel", by=SYSTEM, reason=reason, now=now)
        _publish(session, "booking.cancelled", booking)
    return bookings


def cancel_future_bookings(session: Session, standard_id: str, reason: str = "standard_unavailable",
                           now: dt.datetime | None = None) -> list[Reservation]:
    """Cancel the standard's pending and confirmed bookings that have not ended (domain rule 6).

    Each gets ``reason``, ``decided_by: system``, a bumped sequence and a ``booking.cancelled`` event
    telling its requester. Blackouts stay. Returns the cancelled bookings.
    """
    now = now or clock()
    bookings = session.scalars(
        select(Reservation).where(
            Reservation.standard_id == standard_id, Reservation.kind == "booking",
            Reservation.status.in_(rules.ACTIVE_STATUSES), Reservation.ends_at > now)
        .order_by(Reservation.starts_at, Reservation.id).with_for_update()).all()
    return _cancel_all(session, list(bookings), reason, now)


def cancel_bookings_of_expired_certificates(session: Session, as_of: dt.date,
                                            now: dt.datetime | None = None) -> int:
    """Cancel the bookings (not ended by ``now``) of standards whose certificate expired before ``as_of``."""
    now = now or clock()
    bookings = session.scalars(
        select(Reservation).join(KnownStandard, KnownStandard.id == Reservation.standard_id).where(
            KnownStandard.certificate_expires_on < as_of, Reservation.kind == "booking",
            Reservation.status.in_(rules.ACTIVE_STATUSES), Reservation.ends_at > now)
        .order_by(Reservation.starts_at, Reservation.id).with_for_update(of=Reservation)).all()
    return len(_cancel_all(session, list(bookings), "standard_unavailable", now))


# -- reminders --------------------------------------------------------------------------------------

def send_booking_reminders(session: Session, now: dt.datetime, reminder_hours: int) -> int:
    """Remind of confirmed bookings starting within ``reminder_hours``: once each, ever.

    Set-based on the partial index of unreminded confirmed bookings by ``starts_at``. A run after
    downtime catches up every booking still in the future. Two workers never remind twice:
    PostgreSQL skips rows another worker holds (``FOR UPDATE SKIP LOCKED``) and re-checks
    ``reminder_sent_at`` on the rows it gets; SQLite runs writers one at a time.
    """
    if reminder_hours <= 0:
        return 0
    query = (select(Reservation).where(
        Reservation.status == "confirmed", Reservation.reminder_sent_at.is_(None),
        Reservation.starts_at > now, Reservation.starts_at <= now + dt.timedelta(hours=reminder_hours))
        .order_by(Reservation.starts_at, Reservation.id))
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    bookings = session.scalars(query).all()
    standards: dict[str, KnownStandard | None] = {}
    for booking in bookings:
        booking.reminder_sent_at = now
        # A reminder is not a change of the booking: keep updated_at (and the calendar feed) as they are.
        booking.updated_at = Reservation.updated_at
        if booking.standard_id not in standards:
            standards[booking.standard_id] = session.get(KnownStandard, booking.standard_id)
        _publish(session, "booking.reminder", booking, standards[booking.standard_id])
    return len(bookings)


# -- lists ----------------------------------------------------------------------------------------

def overlapping(window_start: dt.datetime | None, window_end: dt.datetime | None) -> list:
    """Conditions: the reservation's own time overlaps the (open-ended) window."""
    conditions = []
    if window_end is not None:
        conditions.append(Reservation.starts_at < window_end)
    if window_start is not None:
        conditions.append(Reservation.ends_at > window_start)
    return conditions


def visible_to(caller: Caller) -> list:
    """Conditions: the bookings this caller may list (staff all, a partner its organization's)."""
    if rules.is_staff(caller.role):
        return []
    if caller.organization_id is not None:
        return [Reservation.requested_by_org == caller.organization_id]
    return [Reservation.requested_by_client == caller.client_id]


def calendar_reservations(session: Session, standard_id: str, since: dt.datetime) -> list[Reservation]:
    """What a standard's feed shows: its bookings and blackouts (not rejected) ending after ``since``."""
    return list(session.scalars(
        select(Reservation).where(
            Reservation.standard_id == standard_id, Reservation.ends_at > since,
            Reservation.status != "rejected")
        .order_by(Reservation.starts_at, Reservation.id)).all())

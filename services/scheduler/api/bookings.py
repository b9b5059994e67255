"""Bookings of public measurement standards: request, list, approve, reject, cancel.

Who may do what:
- admin, lab_staff: book (confirmed at once), see every booking, approve and reject pending ones,
  cancel any.
- partner: book (pending until a lab staff approval), see its own organization's bookings only (another
  one's is "not found"; other people's busy time shows through availability and the calendar feed),
  cancel its own.
- enterprise: no access (403): enterprises have their instruments verified, they do not book standards.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

import marshmallow as ma
from flask import url_for
from flask.views import MethodView
from sqlalchemy import func, select

from services.scheduler import bookings as service
from services.scheduler.domain import bookings as rules
from services.scheduler.models import Reservation
from services.scheduler.schemas import (
    BookingQuerySchema,
    BookingSchema,
    ConflictSchema,
    OptionalReasonSchema,
    ReasonSchema,
)
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, ProblemSchema, not_found, validation_error
from shared.web import Blueprint, db_session

blp = Blueprint("bookings", __name__, url_prefix="/api/v1", description=__doc__)

BOOKERS = ("admin", "lab_staff", "partner")
STAFF = ("admin", "lab_staff")


# -- schemas (the shared ones, plus what this API adds) ---------------------------------------------

def text_problem(value: str) -> str | None:
    """Why free text cannot be stored as given: control characters (bar tab and line breaks), or lone
    surrogates (not Unicode text)."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            return "must be valid Unicode text"
        if category == "Cc" and char not in "\t\n\r":
            return "must not contain control characters other than tabs and line breaks"
    return None


class CleanText:
    """Refuses control characters in the schema's free-text fields (``TEXT_FIELDS``)."""

    TEXT_FIELDS: tuple[str, ...] = ()

    @ma.validates_schema(skip_on_field_errors=False)
    def _clean_text(self, data, **_):
        errors = {name: [problem] for name in self.TEXT_FIELDS if isinstance(data.get(name), str)
                  and (problem := text_problem(data[name])) is not None}
        if errors:
            raise ma.ValidationError(errors)


class BookingRequestSchema(CleanText, BookingSchema):
    TEXT_FIELDS = ("purpose",)


class ReasonRequestSchema(CleanText, ReasonSchema):
    TEXT_FIELDS = ("reason",)


class OptionalReasonRequestSchema(CleanText, OptionalReasonSchema):
    TEXT_FIELDS = ("reason",)


class BookingOutSchema(BookingSchema):
    held_until = ma.fields.AwareDateTime(dump_only=True, format="iso", metadata={
        "description": "ends_at plus the standard's recovery time: until when the booking holds it"})


class ConflictOutSchema(ConflictSchema):
    held_until = ma.fields.AwareDateTime(format="iso", metadata={
        "description": "End of the time it holds (recovery included for bookings)"})


class BookingConflictProblemSchema(ProblemSchema):
    conflicts = ma.fields.List(ma.fields.Nested(ConflictOutSchema))
    reasons = ma.fields.List(ma.fields.String())
    status_now = ma.fields.String(metadata={"description": "invalid_transition: the current status"})


_PROBLEM = {"schema": BookingConflictProblemSchema, "content_type": "application/problem+json"}
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "URL of the new booking"}}


# -- mapping service outcomes to answers ------------------------------------------------------------

def caller_of(principal: Principal) -> service.Caller:
    return service.Caller(principal.client_id, principal.role, principal.organization_id)


def conflict_problem(exc: service.BookingConflict) -> Problem:
    return Problem(409, "The requested time overlaps reservations of this standard (recovery time included).",
                   code="booking_conflict", conflicts=ConflictOutSchema(many=True).dump(exc.body()))


def unavailable_problem(exc: service.StandardUnavailable) -> Problem:
    return Problem(409, "The standard cannot be booked for this time: " + ", ".join(exc.reasons) + ".",
                   code="standard_unavailable", reasons=exc.reasons)


def transition_problem(exc: rules.InvalidTransition) -> Problem:
    return Problem(409, str(exc), code="invalid_transition", status_now=exc.status)


def invalid_times(exc: rules.InvalidTimes):
    validation_error(exc.errors)


def utc_or_422(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return rules.as_utc(value, field)
    except rules.InvalidTimes as exc:
        invalid_times(exc)


def booking_or_404(session, booking_id: str, caller: service.Caller, *, lock: bool = False) -> Reservation:
    """The booking if the caller may see it: staff any, a partner its own; else 404 (ids cannot be probed)."""
    find = service.lock_reservation if lock else service.find_reservation
    booking = find(session, booking_id, "booking")
    if booking is None or not (rules.is_staff(caller.role) or rules.is_own(
            caller.client_id, caller.organization_id, booking.requested_by_client, booking.requested_by_org)):
        not_found("booking")
    return booking


# -- endpoints --------------------------------------------------------------------------------------

@blp.route("/bookings")
class Bookings(MethodView):
    @require(*BOOKERS)
    @blp.arguments(BookingQuerySchema, location="query")
    @blp.response(200, BookingOutSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List bookings

        Filters: `standard_id`, `status`, and `from`/`to` (RFC 3339 with offset): bookings whose time
        `[starts_at, ends_at)` overlaps `[from, to)`; either bound may be left open. Ordered by starts_at,
        then id. Staff see every booking; a partner sees its own organization's bookings only.
        """
        caller = caller_of(current_principal())
        window_start = utc_or_422(args.get("from_"), "from")
        window_end = utc_or_422(args.get("to"), "to")
        if window_start is not None and window_end is not None and window_end <= window_start:
            validation_error({"to": "must be after from"})
        conditions = [Reservation.kind == "booking", *service.visible_to(caller),
                      *service.overlapping(window_start, window_end)]
        if args.get("standard_id") is not None:
            # An id that cannot be one names no standard: nothing matches.
            conditions.append(Reservation.standard_id == (service.canonical_id(args["standard_id"]) or ""))
        if args.get("status") is not None:
            conditions.append(Reservation.status == args["status"])
        session = db_session()
        count = session.scalar(select(func.count()).select_from(Reservation).where(*conditions))
        pagination_parameters.item_count = count
        if pagination_parameters.first_item >= count:
            return []
        rows = session.scalars(select(Reservation).where(*conditions)
                               .order_by(Reservation.starts_at, Reservation.id)
                               .offset(pagination_parameters.first_item)
                               .limit(pagination_parameters.page_size)).all()
        return [service.booking_view(r) for r in rows]

    @require(*BOOKERS)
    @blp.arguments(BookingRequestSchema)
    @blp.response(201, BookingOutSchema, headers=_LOCATION)
    @blp.alt_response(409, description=(
        "`code: booking_conflict`: the time overlaps pending/confirmed bookings (their recovery time "
        "included) or blackouts, listed in `conflicts` as `{kind, id, starts_at, ends_at, held_until}`. "
        "`code: standard_unavailable`: the standard cannot be booked until ends_at; `reasons` lists why: "
        "`not_bookable`, `status_<status>`, `assessment_certificate_missing`, "
        "`assessment_certificate_expires:<date>`, `equipment_due:<equipment id>:<date>`, "
        "`equipment_never_calibrated:<equipment id>`."), **_PROBLEM)
    def post(self, data):
        """Book a standard

        `starts_at` and `ends_at` are RFC 3339 timestamps with an offset (a naive one is a 422). Rules
        (422 naming the field): `ends_at` after `starts_at`; `starts_at` not in the past and at most
        1825 days ahead; a booking lasts at most 31 days. An unknown `standard_id` (or, for a partner, a
        standard that is not public) is a 422 naming `standard_id`.

        The booking holds `[starts_at, ends_at + recovery_minutes)` of the standard; back-to-back
        bookings are fine. The standard must be bookable, in service, and stay usable until ends_at: a
        certificate or calibration valid through day D covers bookings ending by D+1 00:00 institute
        time (INSTITUTE_TZ). Two concurrent requests for the same time: exactly one wins, the other
        gets 409 (enforced by the database).

        admin and lab_staff bookings are `confirmed` at once (`booking.confirmed`); partner bookings
        are `pending` until approved (`booking.requested`).
        """
        caller = caller_of(current_principal())
        session = db_session()
        try:
            booking = service.create_booking(
                session, caller, standard_id=data["standard_id"], starts_at=data["starts_at"],
                ends_at=data["ends_at"], purpose=data.get("purpose"), now=service.clock())
        except rules.InvalidTimes as exc:
            invalid_times(exc)
        except service.UnknownStandard:
            validation_error({"standard_id": "names no standard known to the scheduler"})
        except service.StandardUnavailable as exc:
            raise unavailable_problem(exc) from None
        except service.BookingConflict as exc:
            raise conflict_problem(exc) from None
        session.commit()
        location = url_for("bookings.booking", booking_id=booking.id)
        return service.booking_view(booking), 201, {"Location": location}


@blp.route("/bookings/<booking_id>", endpoint="booking")
class BookingById(MethodView):
    @require(*BOOKERS)
    @blp.response(200, BookingOutSchema)
    def get(self, booking_id):
        """One booking (staff: any; partner: its own organization's, else 404)"""
        caller = caller_of(current_principal())
        return service.booking_view(booking_or_404(db_session(), booking_id, caller))


def _act(booking_id: str, action):
    caller = caller_of(current_principal())
    session = db_session()
    booking = booking_or_404(session, booking_id, caller, lock=True)
    try:
        action(session, booking, caller, service.clock())
    except rules.InvalidTransition as exc:
        raise transition_problem(exc) from None
    except service.StandardUnavailable as exc:
        raise unavailable_problem(exc) from None
    session.commit()
    return service.booking_view(booking)


_TRANSITION_DOC = ("`code: invalid_transition`: the booking is not in a status this action applies to "
                   "(`status_now`), or it has already ended.")


@blp.route("/bookings/<booking_id>/approve")
class ApproveBooking(MethodView):
    @require(*STAFF)
    @blp.response(200, BookingOutSchema)
    @blp.alt_response(409, description=_TRANSITION_DOC + " `code: standard_unavailable` (with `reasons`): "
                      "the standard can no longer be booked until the booking ends; it stays pending.",
                      **_PROBLEM)
    def post(self, booking_id):
        """Approve a pending booking (pending → confirmed)

        Checks again that the standard stays usable until the booking ends. Bumps `sequence`; publishes
        `booking.confirmed`.
        """
        return _act(booking_id, lambda s, b, c, now: service.approve(s, b, c, now))


@blp.route("/bookings/<booking_id>/reject")
class RejectBooking(MethodView):
    @require(*STAFF)
    @blp.arguments(ReasonRequestSchema)
    @blp.response(200, BookingOutSchema)
    @blp.alt_response(409, description=_TRANSITION_DOC, **_PROBLEM)
    def post(self, data, booking_id):
        """Reject a pending booking (pending → rejected), with a reason

        Bumps `sequence`; publishes `booking.rejected`. A rejected booking holds no time.
        """
        return _act(booking_id, lambda s, b, c, now: service.reject(s, b, c, data["reason"], now))


@blp.route("/bookings/<booking_id>/cancel")
class CancelBooking(MethodView):
    @require(*BOOKERS)
    @blp.arguments(OptionalReasonRequestSchema)
    @blp.response(200, BookingOutSchema)
    @blp.alt_response(409, description=_TRANSITION_DOC, **_PROBLEM)
    def post(self, data, booking_id):
        """Cancel a booking (pending or confirmed → cancelled)

        Staff cancel any booking, a partner its own organization's (another's is 404). The body's
        `reason` is optional. A booking that has ended cannot be cancelled. Bumps `sequence`; publishes
        `booking.cancelled`; the time is free again at once.
        """
        return _act(booking_id, lambda s, b, c, now: service.cancel(s, b, c, data.get("reason"), now))

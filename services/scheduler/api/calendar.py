"""The calendar of one standard: free time, blackouts, and an iCalendar (RFC 5545) feed.

Who may do what:
- admin, lab_staff: everything, including creating and lifting blackouts.
- partner: read availability, blackouts and the calendar feed of public standards (another
  organization's bookings appear there as busy time only: no purpose, no requester); a standard that
  is not public is "not found".
- enterprise: no access (403).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import marshmallow as ma
from flask import Response, request, url_for
from flask.views import MethodView
from icalendar import Calendar, Event, vDuration
from sqlalchemy import func, select

from services.scheduler import bookings as service
from services.scheduler.api.bookings import (
    BOOKERS,
    STAFF,
    BookingConflictProblemSchema,
    CleanText,
    caller_of,
    conflict_problem,
    invalid_times,
    utc_or_422,
)
from services.scheduler.domain import bookings as rules
from services.scheduler.models import KnownStandard, Reservation
from services.scheduler.schemas import BlackoutSchema, IntervalQuerySchema, IntervalSchema
from shared.auth import current_principal, require
from shared.errors import not_found, validation_error
from shared.web import Blueprint, db_session

blp = Blueprint("calendar", __name__, url_prefix="/api/v1", description=__doc__)

#: How long past reservations stay in the feed (cancelled ones too, so subscribed calendars drop them).
FEED_PAST = dt.timedelta(days=30)
FEED_REFRESH = dt.timedelta(hours=1)
PRODID = "-//refstd//Reference standards scheduler 1.0//EN"
UID_DOMAIN = "refstd"
_ICS_STATUS = {"pending": "TENTATIVE", "confirmed": "CONFIRMED", "cancelled": "CANCELLED"}


class BlackoutOutSchema(BlackoutSchema):
    status = ma.fields.String(dump_only=True, metadata={"description": "confirmed | cancelled (lifted)"})
    sequence = ma.fields.Integer(dump_only=True, metadata={"description": "iCalendar SEQUENCE"})
    updated_at = ma.fields.AwareDateTime(dump_only=True)


class BlackoutRequestSchema(CleanText, BlackoutSchema):
    TEXT_FIELDS = ("reason",)


class BlackoutQuerySchema(ma.Schema):
    from_ = ma.fields.AwareDateTime(data_key="from", format="iso")
    to = ma.fields.AwareDateTime(format="iso")
    status = ma.fields.String(validate=ma.validate.OneOf(rules.BLACKOUT_STATUSES))


def standard_or_404(session, standard_id: str, role: str, *, lock: bool = False) -> KnownStandard:
    try:
        return service.standard_visible_to(session, standard_id, role, lock=lock)
    except service.UnknownStandard:
        not_found("standard")


def blackout_or_404(session, blackout_id: str, role: str, *, lock: bool = False) -> Reservation:
    find = service.lock_reservation if lock else service.find_reservation
    blackout = find(session, blackout_id, "blackout")
    if blackout is None:
        not_found("blackout")
    try:
        service.standard_visible_to(session, blackout.standard_id, role)
    except service.UnknownStandard:
        # Answered as a missing blackout, not a missing standard: ids cannot be probed.
        not_found("blackout")
    return blackout


@blp.route("/standards/<standard_id>/availability")
class Availability(MethodView):
    @require(*BOOKERS)
    @blp.arguments(IntervalQuerySchema, location="query")
    @blp.response(200, IntervalSchema(many=True))
    def get(self, args, standard_id):
        """Free time of a standard

        The intervals of `[from, to)` (RFC 3339 with offset; at most 92 days wide, else 422 naming `to`)
        not held by a pending or confirmed booking (its recovery time included) or a blackout, earliest
        first, as `[{starts_at, ends_at}]` in UTC. A new booking must fit with its own recovery time:
        `ends_at + recovery_minutes` within a free interval. Availability says nothing about whether the
        standard stays usable (certificate, calibrations): booking checks that.
        """
        principal = current_principal()
        try:
            window_start, window_end = rules.check_window(args["from_"], args["to"])
        except rules.InvalidTimes as exc:
            invalid_times(exc)
        session = db_session()
        standard = standard_or_404(session, standard_id, principal.role)
        return [{"starts_at": start, "ends_at": end}
                for start, end in service.free_intervals(session, standard.id, window_start, window_end)]


@blp.route("/standards/<standard_id>/blackouts")
class StandardBlackouts(MethodView):
    @require(*BOOKERS)
    @blp.arguments(BlackoutQuerySchema, location="query")
    @blp.response(200, BlackoutOutSchema(many=True))
    @blp.paginate()
    def get(self, args, standard_id, pagination_parameters):
        """A standard's blackouts

        Lifted ones (`status: cancelled`) are kept for history; filter with `status`. `from`/`to` keep
        those overlapping `[from, to)`. Ordered by starts_at, then id.
        """
        principal = current_principal()
        window_start = utc_or_422(args.get("from_"), "from")
        window_end = utc_or_422(args.get("to"), "to")
        if window_start is not None and window_end is not None and window_end <= window_start:
            validation_error({"to": "must be after from"})
        session = db_session()
        standard = standard_or_404(session, standard_id, principal.role)
        conditions = [Reservation.kind == "blackout", Reservation.standard_id == standard.id,
                      *service.overlapping(window_start, window_end)]
        if args.get("status") is not None:
            conditions.append(Reservation.status == args["status"])
        count = session.scalar(select(func.count()).select_from(Reservation).where(*conditions))
        pagination_parameters.item_count = count
        if pagination_parameters.first_item >= count:
            return []
        return session.scalars(select(Reservation).where(*conditions)
                               .order_by(Reservation.starts_at, Reservation.id)
                               .offset(pagination_parameters.first_item)
                               .limit(pagination_parameters.page_size)).all()

    @require(*STAFF)
    @blp.arguments(BlackoutRequestSchema)
    @blp.response(201, BlackoutOutSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(409, description="`code: booking_conflict`: the blackout overlaps pending/confirmed "
                      "bookings (recovery included) or other blackouts, listed in `conflicts`; cancel those "
                      "first.",
                      schema=BookingConflictProblemSchema, content_type="application/problem+json")
    def post(self, data, standard_id):
        """Black out a standard (maintenance, away for calibration)

        RFC 3339 timestamps with offset; `ends_at` after `starts_at` and in the future (a blackout may
        have begun already), at most 366 days long, starting at most 1825 days ahead (422 naming the
        field). Same conflict rule as bookings. Blackouts are allowed whatever the standard's state.
        """
        caller = caller_of(current_principal())
        session = db_session()
        standard = standard_or_404(session, standard_id, caller.role)
        try:
            blackout = service.create_blackout(session, caller, standard, starts_at=data["starts_at"],
                                               ends_at=data["ends_at"], reason=data["reason"],
                                               now=service.clock())
        except rules.InvalidTimes as exc:
            invalid_times(exc)
        except service.BookingConflict as exc:
            raise conflict_problem(exc) from None
        session.commit()
        return blackout, 201, {"Location": url_for("calendar.blackout", blackout_id=blackout.id)}


@blp.route("/blackouts/<blackout_id>", endpoint="blackout")
class BlackoutById(MethodView):
    @require(*BOOKERS)
    @blp.response(200, BlackoutOutSchema)
    def get(self, blackout_id):
        """One blackout"""
        return blackout_or_404(db_session(), blackout_id, current_principal().role)

    @require(*STAFF)
    @blp.response(204)
    def delete(self, blackout_id):
        """Lift a blackout

        The blackout is kept with `status: cancelled` (history, and so calendar feeds drop it) and its
        time is free again. Lifting a lifted blackout changes nothing (204 again).
        """
        caller = caller_of(current_principal())
        session = db_session()
        blackout = blackout_or_404(session, blackout_id, caller.role, lock=True)
        if service.cancel_blackout(blackout, caller, service.clock()):
            session.commit()


# -- iCalendar feed -------------------------------------------------------------------------------

def _summary(reservation: Reservation, show_details: bool) -> str:
    if reservation.kind == "blackout":
        return reservation.reason or "停用 Blackout"
    if not show_details:
        return "已预约 Booked"
    return reservation.purpose or "预约 Booking"


def calendar_feed(standard: KnownStandard, reservations: list[Reservation], show_details) -> bytes:
    """The RFC 5545 text of a standard's reservations (one VEVENT each, times in UTC).

    No METHOD: this is a published feed, not an invitation, so DTSTAMP is when each reservation last
    changed (RFC 5545 3.8.7.2) and the text stays identical until something changes.
    """
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"{standard.code} {standard.name}")
    calendar.add("x-wr-caldesc", "Bookings and blackouts of a public measurement standard")
    # Refresh hints (RFC 7986 and Microsoft's); clients poll at their own pace anyway.
    calendar.add("refresh-interval", FEED_REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", vDuration(FEED_REFRESH))
    for reservation in reservations:
        event = Event()
        event.add("uid", f"{reservation.id}@{UID_DOMAIN}")
        event.add("dtstamp", reservation.updated_at)
        event.add("created", reservation.created_at)
        event.add("last-modified", reservation.updated_at)
        event.add("sequence", reservation.sequence)
        event.add("dtstart", reservation.starts_at)
        event.add("dtend", reservation.ends_at)
        event.add("summary", _summary(reservation, show_details(reservation)))
        event.add("status", _ICS_STATUS[reservation.status])
        event.add("transp", "TRANSPARENT" if reservation.status == "cancelled" else "OPAQUE")
        event.add("categories", [reservation.kind.upper()])
        if standard.lab:
            event.add("location", standard.lab)
        calendar.add_component(event)
    return calendar.to_ical()


@blp.route("/standards/<standard_id>/calendar.ics")
class StandardCalendar(MethodView):
    @require(*BOOKERS)
    @blp.response(200, content_type="text/calendar", description="The RFC 5545 feed",
                  headers={"ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(304, description="Unchanged since the ETag given in If-None-Match.")
    def get(self, standard_id):
        """iCalendar feed of a standard's bookings and blackouts

        One VEVENT per booking and blackout (rejected bookings left out) that ended at most 30 days ago
        or later: UID `<id>@refstd` (stable for the reservation's life), SEQUENCE bumped on every
        change, STATUS TENTATIVE (pending), CONFIRMED (confirmed, blackouts) or CANCELLED (cancelled
        bookings and lifted blackouts, kept so subscribed calendars drop them), times in UTC.

        Needs a bearer token like every other endpoint: calendar applications cannot send one, so
        subscribe through something that can (a script or proxy fetching this URL), or poll
        `/availability`. A partner sees its own organization's bookings in full and other bookings as
        busy time ("Booked") only. Answers an `ETag`; `If-None-Match` gives 304 when nothing changed.
        """
        caller = caller_of(current_principal())
        session = db_session()
        standard = standard_or_404(session, standard_id, caller.role)
        now = service.clock()
        reservations = service.calendar_reservations(session, standard.id, now - FEED_PAST)

        def show_details(reservation: Reservation) -> bool:
            return rules.is_staff(caller.role) or rules.is_own(
                caller.client_id, caller.organization_id, reservation.requested_by_client,
                reservation.requested_by_org)

        body = calendar_feed(standard, reservations, show_details)
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=300"}
        if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
            return Response(status=304, headers=headers)
        filename = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in standard.code)
        headers["Content-Disposition"] = f'inline; filename="{filename or "calendar"}.ics"'
        return Response(body, content_type="text/calendar; charset=utf-8", headers=headers)

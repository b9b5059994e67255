"""Representations of the scheduler's resources and the payloads of the events it publishes."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import ValidationError, fields, validate, validates_schema

BOOKING_STATUSES = ("pending", "confirmed", "rejected", "cancelled")
ITEM_KINDS = ("equipment", "assessment_certificate", "instrument")
DUE_STATES = ("ok", "due_soon", "due", "overdue")


class Schema(ma.Schema):
    pass


def _ends_after_starts(data) -> None:
    if data.get("starts_at") and data.get("ends_at") and data["ends_at"] <= data["starts_at"]:
        raise ValidationError("ends_at must be after starts_at.", "ends_at")


# -- what is due ---------------------------------------------------------------------------------

class DueQuerySchema(Schema):
    within_days = fields.Integer(load_default=30, validate=validate.Range(0, 3660),
                                 metadata={"description": "Items due within this many days (overdue included)"})
    organization_id = fields.String(validate=validate.Length(max=36))
    kind = fields.String(validate=validate.OneOf(ITEM_KINDS))
    state = fields.String(validate=validate.OneOf(DUE_STATES))
    standard_id = fields.String(validate=validate.Length(max=36))


class DueItemSchema(Schema):
    item_kind = fields.String()
    item_id = fields.String()
    name = fields.String()
    serial_number = fields.String(allow_none=True)
    standard_id = fields.String(allow_none=True)
    organization_id = fields.String(allow_none=True)
    due_on = fields.Date(allow_none=True)
    days_left = fields.Integer(allow_none=True)
    state = fields.String(metadata={"description": "ok | due_soon | due | overdue"})


# -- policy --------------------------------------------------------------------------------------

def _lead_days(**kwargs):
    return fields.List(fields.Integer(strict=True, validate=validate.Range(0, 3660)),
                       validate=validate.Length(min=1, max=20), **kwargs)


class PolicySchema(Schema):
    instrument_lead_days = _lead_days(required=True)
    equipment_lead_days = _lead_days(required=True)
    certificate_lead_days = _lead_days(required=True)
    overdue_repeat_days = fields.Integer(strict=True, required=True, validate=validate.Range(1, 365))
    overdue_max_notices = fields.Integer(strict=True, required=True, validate=validate.Range(0, 100))
    booking_reminder_hours = fields.Integer(strict=True, required=True, validate=validate.Range(0, 24 * 30))
    version = fields.Integer(dump_only=True)

    @validates_schema
    def _distinct(self, data, **_):
        for name in ("instrument_lead_days", "equipment_lead_days", "certificate_lead_days"):
            values = data.get(name) or []
            if len(set(values)) != len(values):
                raise ValidationError("lead days must be distinct.", name)


DEFAULT_POLICY = {
    "instrument_lead_days": [30, 7, 0],
    "equipment_lead_days": [60, 30, 7, 0],
    "certificate_lead_days": [270, 210, 180],
    "overdue_repeat_days": 7,
    "overdue_max_notices": 4,
    "booking_reminder_hours": 24,
}


# -- sweeps --------------------------------------------------------------------------------------

class SweepQuerySchema(Schema):
    dry_run = fields.Boolean(load_default=False)
    as_of = fields.Date(metadata={"description": "The date to sweep as (default: today, institute time)"})


class NoticeItemSchema(Schema):
    item_kind = fields.String()
    item_id = fields.String()
    name = fields.String()
    serial_number = fields.String(allow_none=True)
    category = fields.String(allow_none=True)
    regulation = fields.String(allow_none=True)
    mandatory = fields.Boolean()
    standard_id = fields.String(allow_none=True)
    standard_name = fields.String(allow_none=True)
    due_on = fields.Date(allow_none=True)
    days_left = fields.Integer()
    lead = fields.String(metadata={"description": "The lead time crossed: days before due, or overdue:<n>"})


class ContactSchema(Schema):
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)


class RecipientSchema(Schema):
    kind = fields.String(metadata={"description": "organization | custodian"})
    organization_id = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    name_en = fields.String(allow_none=True)
    contacts = fields.List(fields.Nested(ContactSchema))


class NoticeSchema(Schema):
    """Payload of recalibration.due_soon / recalibration.overdue / certificate.renewal_due.

    One recalibration notice per recipient and sweep lists all its items: it is recalibration.overdue
    (notice ``overdue``) when any item in it is overdue, and may then list items due soon as well.
    """

    notice = fields.String(metadata={"description": "due_soon | overdue | renewal_due; overdue: at least one "
                                                    "item is overdue (others may not be)"})
    as_of = fields.Date()
    recipient = fields.Nested(RecipientSchema)
    organization_id = fields.String(allow_none=True)
    items = fields.List(fields.Nested(NoticeItemSchema), metadata={
        "description": "Most urgent first; each with its own due date, days left and lead"})
    earliest_due_on = fields.Date(allow_none=True)
    next_steps = fields.String(metadata={"description": "What to do next (how to book verification)"})


class SweepResultSchema(Schema):
    items_scanned = fields.Integer()
    notices_emitted = fields.Integer()
    as_of = fields.Date()
    dry_run = fields.Boolean()
    notices = fields.List(fields.Nested(NoticeSchema), metadata={"description": "Dry run: what would go out"})


# -- bookings and blackouts ----------------------------------------------------------------------

class RequesterSchema(Schema):
    client_id = fields.String()
    organization_id = fields.String(allow_none=True)


class BookingSchema(Schema):
    id = fields.String(dump_only=True)
    standard_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    requested_by = fields.Nested(RequesterSchema, dump_only=True)
    starts_at = fields.AwareDateTime(required=True, format="iso")
    ends_at = fields.AwareDateTime(required=True, format="iso")
    purpose = fields.String(validate=validate.Length(max=2000), allow_none=True)
    status = fields.String(dump_only=True)
    decided_by = fields.String(dump_only=True, allow_none=True)
    reason = fields.String(dump_only=True, allow_none=True)
    sequence = fields.Integer(dump_only=True, metadata={"description": "iCalendar SEQUENCE"})
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)

    @validates_schema
    def _order(self, data, **_):
        _ends_after_starts(data)


class BookingEventSchema(BookingSchema):
    """Payload of booking.* events: the booking, plus what a notice needs about its standard."""

    standard_name = fields.String(allow_none=True)
    standard_code = fields.String(allow_none=True)
    lab = fields.String(allow_none=True)
    custodian_email = fields.String(allow_none=True)
    requester = fields.Nested(RecipientSchema, allow_none=True)


class BookingQuerySchema(Schema):
    standard_id = fields.String(validate=validate.Length(max=36))
    status = fields.String(validate=validate.OneOf(BOOKING_STATUSES))
    # 'from' is a Python keyword: the field is named from_ and read from the query parameter 'from'.
    from_ = fields.AwareDateTime(data_key="from", format="iso")
    to = fields.AwareDateTime(format="iso")


class ReasonSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class OptionalReasonSchema(Schema):
    reason = fields.String(validate=validate.Length(max=2000), allow_none=True)


class BlackoutSchema(Schema):
    id = fields.String(dump_only=True)
    standard_id = fields.String(dump_only=True)
    starts_at = fields.AwareDateTime(required=True, format="iso")
    ends_at = fields.AwareDateTime(required=True, format="iso")
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    created_by = fields.String(dump_only=True, attribute="requested_by_client")
    created_at = fields.AwareDateTime(dump_only=True)

    @validates_schema
    def _order(self, data, **_):
        _ends_after_starts(data)


class IntervalQuerySchema(Schema):
    from_ = fields.AwareDateTime(data_key="from", required=True, format="iso")
    to = fields.AwareDateTime(required=True, format="iso")


class IntervalSchema(Schema):
    starts_at = fields.AwareDateTime(format="iso")
    ends_at = fields.AwareDateTime(format="iso")


class ConflictSchema(Schema):
    kind = fields.String()
    id = fields.String()
    starts_at = fields.AwareDateTime(format="iso")
    ends_at = fields.AwareDateTime(format="iso")

"""Representations of the inventory's resources: one schema validates input, dumps output, documents
the OpenAPI spec, and is the payload of the resource's events (event-carried state).

Every schema derives from ``shared.schemas.Schema``: text no database can store (NUL, lone surrogates)
is a 422 naming the field. Whole-number fields are strict: 1.5 is refused, not cut to 1.
"""

from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from services.inventory import domain
from shared.schemas import JsonBoolean, NoControlCharacters
from shared.schemas import Schema as Schema
from shared.timeutil import institute_today

LOCALES = ("zh-CN", "en")
ORGANIZATION_KINDS = ("enterprise", "university", "institute", "government")
ROLES_OF_EQUIPMENT = ("main", "auxiliary")
CALIBRATION_RESULTS = domain.CALIBRATION_RESULTS
CHECK_KINDS = domain.CHECK_KINDS
VERIFICATION_RESULTS = domain.VERIFICATION_RESULTS

# One-line text (names, serial numbers) holds no line breaks, tabs or other control characters.
SINGLE_LINE = NoControlCharacters(
    error="must not contain control characters such as line breaks, tabs or NUL")
# Free text (notes) may span lines.
MULTI_LINE = NoControlCharacters(allow="\t\n\r",
                                 error="must not contain control characters other than line breaks and tabs")


def _text(max_length: int, **kwargs) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=max_length), **kwargs)


def _line(max_length: int, *, min_length: int = 0, **kwargs) -> fields.String:
    return fields.String(validate=[validate.Length(min=min_length, max=max_length), SINGLE_LINE], **kwargs)


def _whole_number(minimum: int, maximum: int, **kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(minimum, maximum), **kwargs)


def _not_in_future(value) -> None:
    """A record's date: today at the latest (institute time zone)."""
    today = institute_today()
    if value is not None and value > today:
        raise ValidationError(f"cannot be in the future (today is {today.isoformat()}).")


class Resource(Schema):
    id = fields.String(dump_only=True)
    version = fields.Integer(dump_only=True, metadata={"description": "Bumped on every change; also the ETag"})
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)


# -- organizations -------------------------------------------------------------------------------

class ContactSchema(Schema):
    name = _text(100, required=True)
    email = fields.Email(required=True, validate=validate.Length(max=254))
    phone = fields.String(validate=validate.Length(max=40), allow_none=True)
    locale = fields.String(validate=validate.OneOf(LOCALES), allow_none=True,
                           metadata={"description": "Language of notices to this contact"})


class OrganizationSchema(Resource):
    name = _text(200, required=True)
    name_en = fields.String(validate=validate.Length(max=200), allow_none=True)
    kind = fields.String(required=True, validate=validate.OneOf(ORGANIZATION_KINDS))
    credit_code = fields.String(allow_none=True, metadata={
        "description": "统一社会信用代码, 18 characters with a GB 32100-2015 check digit; required for enterprises"})
    contacts = fields.List(fields.Nested(ContactSchema), load_default=list, validate=validate.Length(max=50))
    address = fields.String(validate=validate.Length(max=300), allow_none=True)
    industry_chains = fields.List(_text(100), load_default=list, validate=validate.Length(max=50))
    alliance_member = JsonBoolean(load_default=False)

    @validates("credit_code")
    def _credit_code(self, value, **_):
        if value is not None:
            problem = domain.credit_code_problem(domain.normalise_credit_code(value))
            if problem:
                raise ValidationError(problem)


class OrganizationQuerySchema(Schema):
    kind = fields.String(validate=validate.OneOf(ORGANIZATION_KINDS))
    q = fields.String(validate=validate.Length(max=100), metadata={"description": "Search in names"})


# -- API clients and tokens -----------------------------------------------------------------------

class ClientCreateSchema(Schema):
    name = _text(200, required=True)
    role = fields.String(required=True, validate=validate.OneOf(("admin", "lab_staff", "enterprise", "partner")))
    organization_id = fields.String(allow_none=True, metadata={
        "description": "Required for enterprise and partner clients"})


class ClientSchema(Schema):
    client_id = fields.String(dump_only=True, attribute="id")
    name = fields.String(dump_only=True)
    role = fields.String(dump_only=True)
    organization_id = fields.String(dump_only=True, allow_none=True)
    created_at = fields.AwareDateTime(dump_only=True)


class ClientCreatedSchema(ClientSchema):
    client_secret = fields.String(dump_only=True, metadata={"description": "Shown once; stored hashed"})


class TokenRequestSchema(Schema):
    grant_type = fields.String(required=True, validate=validate.Equal("client_credentials"))
    client_id = fields.String(load_default=None)
    client_secret = fields.String(load_default=None)
    scope = fields.String(load_default=None)


class TokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()


# -- standards -----------------------------------------------------------------------------------

class RangeSchema(Schema):
    min = fields.Float(allow_nan=False, allow_none=True)
    max = fields.Float(allow_nan=False, allow_none=True)
    unit = fields.String(required=True, metadata={"description": "A unit the pint registry knows (kPa, degC, m^3/h)"})

    @validates("unit")
    def _unit(self, value, **_):
        problem = domain.unit_problem(value)
        if problem:
            raise ValidationError(problem)

    @validates_schema
    def _ordered(self, data, **_):
        if data.get("min") is not None and data.get("max") is not None and data["min"] > data["max"]:
            raise ValidationError("min must not exceed max.", "max")


class AssessmentCertificateSchema(Schema):
    number = fields.String(validate=validate.Length(max=100), allow_none=True)
    issued_on = fields.Date(required=True)
    expires_on = fields.Date(allow_none=True, metadata={"description": "Defaults to issued_on + 4 years"})

    @validates_schema
    def _order(self, data, **_):
        if data.get("expires_on") and data.get("issued_on") and data["expires_on"] <= data["issued_on"]:
            raise ValidationError("expires_on must be after issued_on.", "expires_on")


class CustodianSchema(Schema):
    name = _text(100, required=True)
    email = fields.Email(required=True)


class EquipmentSchema(Resource):
    standard_id = fields.String(dump_only=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES_OF_EQUIPMENT))
    name = _text(200, required=True)
    manufacturer = fields.String(validate=validate.Length(max=200), allow_none=True)
    model = fields.String(validate=validate.Length(max=100), allow_none=True)
    serial_number = fields.String(validate=validate.Length(max=100), allow_none=True)
    calibration_interval_months = _whole_number(1, 240, allow_none=True)
    last_calibrated_on = fields.Date(dump_only=True, allow_none=True)
    due_on = fields.Date(dump_only=True, allow_none=True)
    state = fields.String(dump_only=True, metadata={"description": "ok | due_soon | overdue | never_calibrated"})


class StandardSchema(Resource):
    code = _text(64, required=True)
    name = _text(200, required=True)
    name_en = fields.String(validate=validate.Length(max=200), allow_none=True)
    discipline = fields.String(required=True, validate=validate.OneOf(domain.DISCIPLINES))
    measurand = _text(200, required=True)
    range = fields.Nested(RangeSchema, allow_none=True)
    uncertainty = fields.String(validate=validate.Length(max=200), allow_none=True)
    accuracy_class = fields.String(validate=validate.Length(max=60), allow_none=True)
    assessment_certificate = fields.Nested(AssessmentCertificateSchema, allow_none=True)
    public = JsonBoolean(load_default=True)
    bookable = JsonBoolean(load_default=True)
    lab = fields.String(validate=validate.Length(max=200), allow_none=True)
    custodian = fields.Nested(CustodianSchema, allow_none=True)
    industries = fields.List(_text(100), load_default=list, validate=validate.Length(max=50))
    recovery_minutes = _whole_number(0, 7 * 24 * 60, load_default=0)
    status = fields.String(load_default="in_service", validate=validate.OneOf(domain.STANDARD_STATUSES),
                           metadata={"description": "Set at creation; later only through POST /status"})
    usable = fields.Boolean(dump_only=True)
    blocking_reasons = fields.List(fields.String(), dump_only=True)
    equipment = fields.List(fields.Nested(EquipmentSchema), dump_only=True)


class StandardPatchSchema(StandardSchema):
    """PATCH: every field optional; status changes go through POST /status."""

    class Meta:
        exclude = ("status",)


class StandardQuerySchema(Schema):
    discipline = fields.String(validate=validate.OneOf(domain.DISCIPLINES))
    status = fields.String(validate=validate.OneOf(domain.STANDARD_STATUSES))
    usable = fields.Boolean()
    q = fields.String(validate=validate.Length(max=100), metadata={"description": "Search in code and names"})


class CatalogueEntrySchema(Schema):
    id = fields.String()
    code = fields.String()
    name = fields.String()
    name_en = fields.String(allow_none=True)
    discipline = fields.String()
    measurand = fields.String()
    range = fields.Nested(RangeSchema, allow_none=True)
    uncertainty = fields.String(allow_none=True)
    accuracy_class = fields.String(allow_none=True)
    lab = fields.String(allow_none=True)
    industries = fields.List(fields.String())
    bookable = fields.Boolean()
    usable = fields.Boolean()


class StatusChangeRequestSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(domain.STANDARD_STATUSES))
    reason = _text(1000, required=True)


class StatusChangeSchema(Schema):
    id = fields.String()
    standard_id = fields.String()
    from_status = fields.String(allow_none=True)
    to_status = fields.String()
    reason = fields.String()
    changed_by = fields.String()
    changed_at = fields.AwareDateTime()


class CalibrationSchema(Schema):
    id = fields.String(dump_only=True)
    equipment_id = fields.String(dump_only=True)
    calibrated_on = fields.Date(required=True, validate=_not_in_future)
    performed_by = fields.String(validate=validate.Length(max=200), allow_none=True)
    certificate_number = fields.String(validate=validate.Length(max=100), allow_none=True)
    result = fields.String(required=True, validate=validate.OneOf(CALIBRATION_RESULTS))
    as_found = fields.String(validate=validate.Length(max=2000), allow_none=True)
    as_left = fields.String(validate=validate.Length(max=2000), allow_none=True)
    uncertainty = fields.String(validate=validate.Length(max=200), allow_none=True)
    valid_until = fields.Date(allow_none=True)
    next_due_on = fields.Date(dump_only=True, allow_none=True)
    notes = fields.String(validate=validate.Length(max=2000), allow_none=True)
    corrects_id = fields.String(allow_none=True, metadata={"description": "The record this one corrects"})
    recorded_by = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)

    @validates_schema
    def _valid_until_after(self, data, **_):
        if data.get("valid_until") and data.get("calibrated_on") and data["valid_until"] <= data["calibrated_on"]:
            raise ValidationError("valid_until must be after calibrated_on.", "valid_until")


class CheckSchema(Schema):
    id = fields.String(dump_only=True)
    standard_id = fields.String(dump_only=True)
    kind = fields.String(required=True, validate=validate.OneOf(CHECK_KINDS))
    performed_on = fields.Date(required=True, validate=_not_in_future)
    value = fields.Float(required=True, allow_nan=False)
    limit = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0, min_inclusive=False))
    unit = fields.String(allow_none=True)
    passed = fields.Boolean(dump_only=True)
    notes = fields.String(validate=validate.Length(max=2000), allow_none=True)
    corrects_id = fields.String(allow_none=True)
    recorded_by = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)

    @validates("unit")
    def _unit(self, value, **_):
        if value is not None:
            problem = domain.unit_problem(value)
            if problem:
                raise ValidationError(problem)


# -- enterprise instruments ----------------------------------------------------------------------

class InstrumentSchema(Resource):
    organization_id = fields.String(required=True)
    name = _line(200, min_length=1, required=True)
    category = _line(100, min_length=1, required=True)
    manufacturer = _line(200, allow_none=True)
    model = _line(100, allow_none=True)
    serial_number = _line(100, min_length=1, required=True)
    regulation = _line(100, allow_none=True,
                       metadata={"description": "Verification regulation, e.g. JJG 52-2013"})
    mandatory = JsonBoolean(load_default=False, metadata={"description": "强制检定"})
    interval_months = _whole_number(1, 120, required=True,
                                    metadata={"description": "Verification interval in months (1-120)"})
    last_verified_on = fields.Date(allow_none=True, validate=_not_in_future,
                                   metadata={"description": "Settable at registration only"})
    registered_on = fields.Date(dump_only=True)
    due_on = fields.Date(dump_only=True, metadata={"description": "Never verified: due on registration"})
    location = _line(200, allow_none=True)
    status = fields.String(dump_only=True, metadata={"description": "active | removed"})


class InstrumentPatchSchema(InstrumentSchema):
    class Meta:
        exclude = ("organization_id", "last_verified_on")


class InstrumentQuerySchema(Schema):
    # An organization_id that is not a UUID names no organization: the list is empty, not an error.
    UNSTORED_TEXT_FIELDS = ("organization_id",)

    organization_id = fields.String()
    due_before = fields.Date(metadata={"description": "Only instruments due on or before this date"})
    mandatory = fields.Boolean()
    status = fields.String(validate=validate.OneOf(("active", "removed")), load_default="active")


class VerificationSchema(Schema):
    id = fields.String(dump_only=True)
    instrument_id = fields.String(dump_only=True)
    verified_on = fields.Date(required=True, validate=_not_in_future)
    result = fields.String(required=True, validate=validate.OneOf(VERIFICATION_RESULTS))
    certificate_number = _line(100, allow_none=True)
    standard_id = fields.String(allow_none=True, metadata={"description": "The standard used, if any"})
    next_due_on = fields.Date(dump_only=True, allow_none=True)
    notes = fields.String(validate=[validate.Length(max=2000), MULTI_LINE], allow_none=True)
    corrects_id = fields.String(allow_none=True)
    recorded_by = fields.String(dump_only=True)
    created_at = fields.AwareDateTime(dump_only=True)


class ImportQuerySchema(Schema):
    organization_id = fields.String(required=True)


class ImportResultSchema(Schema):
    created = fields.Integer()
    updated = fields.Integer()

"""Public measurement standards (社会公用计量标准): registry, status history, checks.

Role rules: admin and lab_staff read and write everything here. partner and enterprise clients read
only the standards marked ``public`` (any other standard is 404 to them, never 403); the status history
and the check records are the lab's own records (staff only).
"""

from __future__ import annotations

from typing import Any

from flask import request, url_for
from flask.views import MethodView
from marshmallow import ValidationError, fields, validates
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from services.inventory import domain, events, schemas
from services.inventory.api.records import correction_problem, record_or_404
from services.inventory.models import Check, Equipment, Standard, StatusChange
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, ProblemSchema, not_found, validation_error
from shared.timeutil import institute_today
from shared.web import (
    Blueprint,
    check_if_match,
    commit_or_409,
    db_session,
    etag_of,
    flush_or_409,
    get_or_404,
    paginate_query,
)

blp = Blueprint("standards", __name__, url_prefix="/api/v1",
                description="Public measurement standards, their status history and their check records.")

STAFF = ("admin", "lab_staff")
EVERYONE = ("admin", "lab_staff", "partner", "enterprise")

STATUS_NOT_PATCHABLE = ("status cannot be changed with PATCH; use POST /api/v1/standards/{id}/status "
                        "with a reason, so that the change is kept in the history.")


# --- shared with the equipment module ------------------------------------------------------------

def standard_state(standard: Standard) -> tuple[bool, list[str]]:
    reasons = standard.blocking_reasons
    return domain.is_usable(reasons), reasons


# --- rules of this module -------------------------------------------------------------------------

def _check_unit_fits(unit: str | None, column, field: str) -> None:
    """422 for a unit longer than its column (a valid unit may be up to domain.UNIT_MAX_LENGTH characters)."""
    length = column.type.length
    if unit is not None and len(unit) > length:
        validation_error({field: [f"is too long to store ({len(unit)} characters; at most {length})."]})


def usable_condition(today):
    """SQL form of domain.blocking_reasons(...) == [] for the list filters (standards and the public
    catalogue), so that paging counts are those of the filtered list.

    It must say exactly what the domain rule says (tests compare the two): status in_service, an
    assessment certificate that has not expired, and no equipment that is never calibrated or overdue.
    """
    blocking_equipment = (
        select(Equipment.id)
        .where(Equipment.standard_id == Standard.id,
               or_(Equipment.due_on.is_(None), Equipment.due_on < today))
        .exists()
    )
    return and_(
        Standard.status == "in_service",
        Standard.certificate_expires_on.is_not(None),
        Standard.certificate_expires_on >= today,
        ~blocking_equipment,
    )


def visible_standard_or_404(session: Session, standard_id: str, principal: Principal) -> Standard:
    standard = get_or_404(session, Standard, standard_id, "standard")
    if not principal.is_staff and not standard.public:
        not_found("standard")
    return standard


def _nested_columns(data: dict) -> dict[str, Any]:
    """The flat columns for the nested objects present in ``data`` (None clears them)."""
    columns: dict[str, Any] = {}
    if "range" in data:
        rng = data["range"] or {}
        # The unit is stored as the client wrote it once it is known to be a real unit: the lab's own
        # notation (℃, m^3/h) round-trips unchanged.
        columns.update(range_min=rng.get("min"), range_max=rng.get("max"), range_unit=rng.get("unit"))
    if "assessment_certificate" in data:
        cert = data["assessment_certificate"] or {}
        expires_on = None
        if cert.get("issued_on") is not None:
            try:
                expires_on = domain.certificate_expires_on(cert["issued_on"], cert.get("expires_on"))
            except (ValueError, OverflowError):
                validation_error({"assessment_certificate.issued_on": [
                    "is too late a date to add the 4-year validity to; give expires_on."]})
        columns.update(certificate_number=cert.get("number"), certificate_issued_on=cert.get("issued_on"),
                       certificate_expires_on=expires_on)
    if "custodian" in data:
        custodian = data["custodian"] or {}
        columns.update(custodian_name=custodian.get("name"), custodian_email=custodian.get("email"))
    return columns


_NESTED = ("range", "assessment_certificate", "custodian")


def _duplicate_code(session: Session, code: str | None, exclude_id: str | None = None) -> None:
    """409 duplicate when another standard has this code."""
    if code is None:
        return
    query = select(Standard.id).where(Standard.code == code)
    if exclude_id is not None:
        query = query.where(Standard.id != exclude_id)
    existing = session.scalar(query)
    if existing is not None:
        raise Problem(409, f"A standard with code {code!r} already exists.", code="duplicate",
                      fields=["code"], conflicts=[{"kind": "standard", "id": existing, "code": code}])


def _standard_headers(standard: Standard) -> dict[str, str]:
    return {"ETag": etag_of(standard.version)}


class StandardPatchInput(schemas.StandardPatchSchema):
    """PATCH body of a standard: every field optional; nested objects are replaced as a whole."""

    class Meta:
        exclude = ()

    status = fields.Raw(load_only=True, allow_none=True, metadata={"description": STATUS_NOT_PATCHABLE})

    @validates("status")
    def _not_patchable(self, value, **_):
        raise ValidationError(STATUS_NOT_PATCHABLE)


# Top-level fields are optional, but a nested object that is sent must be complete (range needs its
# unit, the certificate its issued_on): naming the fields keeps "partial" from reaching the nested schemas.
_PATCH_PARTIAL = tuple(StandardPatchInput._declared_fields)


# --- standards ------------------------------------------------------------------------------------

@blp.route("/standards")
class Standards(MethodView):
    @require(*EVERYONE)
    @blp.arguments(schemas.StandardQuerySchema, location="query")
    @blp.response(200, schemas.StandardSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List standards (filters: discipline, status, usable, q)

        admin and lab_staff see every standard; partner and enterprise clients see the public ones.
        `usable` is derived for today (institute time zone) and filtered in the database, so the
        paging counts are those of the filtered list. `q` searches code, name and name_en
        (case-insensitive). Ordered by code.
        """
        principal = current_principal()
        session = db_session()
        query = select(Standard)
        if not principal.is_staff:
            query = query.where(Standard.public.is_(True))
        if "discipline" in args:
            query = query.where(Standard.discipline == args["discipline"])
        if "status" in args:
            query = query.where(Standard.status == args["status"])
        if "usable" in args:
            condition = usable_condition(institute_today())
            query = query.where(condition if args["usable"] else ~condition)
        if args.get("q"):
            query = query.where(or_(Standard.code.icontains(args["q"], autoescape=True),
                                    Standard.name.icontains(args["q"], autoescape=True),
                                    Standard.name_en.icontains(args["q"], autoescape=True)))
        return paginate_query(session, query.order_by(Standard.code, Standard.id), pagination_parameters)

    @require(*STAFF)
    @blp.arguments(schemas.StandardSchema)
    @blp.response(201, schemas.StandardSchema)
    @blp.alt_response(409, schema=ProblemSchema, description="`code: duplicate`: the code is taken")
    def post(self, data):
        """Register a standard

        Roles: admin, lab_staff. `status` is `in_service` unless given; when given, the initial status
        is also recorded in the history (reason "registered"). `assessment_certificate.expires_on`
        defaults to `issued_on` + 4 years. `range.unit` must be a real unit and is stored as written.
        `code` is unique (409 `duplicate`). Publishes `standard.registered`.
        """
        principal = current_principal()
        _check_unit_fits((data.get("range") or {}).get("unit"), Standard.__table__.c.range_unit, "range.unit")
        session = db_session()
        _duplicate_code(session, data["code"])
        scalar = {key: value for key, value in data.items() if key not in _NESTED}
        standard = Standard(**scalar, **_nested_columns(data))
        session.add(standard)
        flush_or_409(session, what="standard",
                     on_integrity_error=lambda: _duplicate_code(session, data["code"]))
        # The schema fills in the default status, so whether the client chose one is read from the body.
        body = request.get_json(silent=True)
        if isinstance(body, dict) and "status" in body:
            session.add(StatusChange(standard_id=standard.id, from_status=None, to_status=standard.status,
                                     reason="registered", changed_by=principal.client_id))
        flush_or_409(session, what="standard")
        events.publish(session, "standard.registered", standard)
        commit_or_409(session, what="standard")
        location = url_for("standards.StandardResource", standard_id=standard.id)
        return standard, 201, {"Location": location, **_standard_headers(standard)}


@blp.route("/standards/<standard_id>")
class StandardResource(MethodView):
    @require(*EVERYONE)
    @blp.response(200, schemas.StandardSchema)
    def get(self, standard_id):
        """Read a standard (ETag = its version)

        partner and enterprise clients read only public standards; any other id is 404.
        """
        standard = visible_standard_or_404(db_session(), standard_id, current_principal())
        return standard, 200, _standard_headers(standard)

    @require(*STAFF)
    @blp.arguments(StandardPatchInput(partial=_PATCH_PARTIAL))
    @blp.response(200, schemas.StandardSchema)
    @blp.alt_response(409, schema=ProblemSchema, description="`code: duplicate`: the code is taken")
    @blp.alt_response(412, schema=ProblemSchema, description="If-Match does not match the current ETag")
    def patch(self, data, standard_id):
        """Change a standard

        Roles: admin, lab_staff. Send only the fields to change; a nested object (`range`,
        `assessment_certificate`, `custodian`) is replaced as a whole, `null` removes it.
        `status` is not patchable (422): use `POST /standards/{id}/status`. Honours `If-Match` (412).
        Publishes `standard.updated` when something changed.
        """
        _check_unit_fits((data.get("range") or {}).get("unit"), Standard.__table__.c.range_unit, "range.unit")
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        check_if_match(standard.version)
        if "code" in data and data["code"] != standard.code:
            _duplicate_code(session, data["code"], exclude_id=standard.id)
        for key, value in data.items():
            if key not in _NESTED:
                setattr(standard, key, value)
        for key, value in _nested_columns(data).items():
            setattr(standard, key, value)
        if not session.is_modified(standard):
            return standard, 200, _standard_headers(standard)
        flush_or_409(session, what="standard",
                     on_integrity_error=lambda: _duplicate_code(session, data.get("code"), standard_id))
        events.publish(session, "standard.updated", standard)
        commit_or_409(session, what="standard")
        return standard, 200, _standard_headers(standard)


# --- status ---------------------------------------------------------------------------------------

@blp.route("/standards/<standard_id>/status")
class StandardStatus(MethodView):
    @require(*STAFF)
    @blp.arguments(schemas.StatusChangeRequestSchema)
    @blp.response(200, schemas.StandardSchema)
    @blp.alt_response(409, schema=ProblemSchema,
                      description="`code: no_change` (already in that status) or `code: retired` (final)")
    def post(self, data, standard_id):
        """Change a standard's status (the only way to do so)

        Roles: admin, lab_staff. `reason` is required. The change is appended to the history with who
        (the client id), when and why. Asking for the current status is 409 `no_change`; `retired` is
        final: a retired standard's status cannot change (409 `retired`). Honours `If-Match`.
        Publishes `standard.status_changed` with the standard's state and the `change`.
        """
        if not data["reason"].strip():
            validation_error({"reason": ["must not be blank."]})
        principal = current_principal()
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        check_if_match(standard.version)
        if data["status"] == standard.status:
            raise Problem(409, f"The standard is already {standard.status}.", code="no_change",
                          status_now=standard.status)
        if standard.status == "retired":
            raise Problem(409, "The standard is retired; retirement is final and its status cannot change.",
                          code="retired", status_now=standard.status)
        change = StatusChange(standard_id=standard.id, from_status=standard.status, to_status=data["status"],
                              reason=data["reason"], changed_by=principal.client_id)
        standard.status = data["status"]
        session.add(change)
        flush_or_409(session, what="standard")
        events.publish(session, "standard.status_changed", standard, change=change)
        commit_or_409(session, what="standard")
        return standard, 200, _standard_headers(standard)


@blp.route("/standards/<standard_id>/history")
class StandardHistory(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.StatusChangeSchema(many=True))
    @blp.paginate()
    def get(self, standard_id, pagination_parameters):
        """A standard's status changes, oldest first (roles: admin, lab_staff)"""
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        query = (select(StatusChange).where(StatusChange.standard_id == standard.id)
                 .order_by(StatusChange.changed_at, StatusChange.id))
        return paginate_query(session, query, pagination_parameters)


# --- stability and repeatability checks -----------------------------------------------------------

@blp.route("/standards/<standard_id>/checks")
class StandardChecks(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.CheckSchema(many=True))
    @blp.paginate()
    def get(self, standard_id, pagination_parameters):
        """A standard's stability and repeatability records, by date (roles: admin, lab_staff)"""
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        query = (select(Check).where(Check.standard_id == standard.id)
                 .order_by(Check.performed_on, Check.created_at, Check.id))
        return paginate_query(session, query, pagination_parameters)

    @require(*STAFF)
    @blp.arguments(schemas.CheckSchema)
    @blp.response(201, schemas.CheckSchema)
    def post(self, data, standard_id):
        """Record a stability or repeatability check

        Roles: admin, lab_staff. `passed` is derived: stability passes when |value| < limit,
        repeatability when |value| <= limit. `unit` must be a real unit (stored as written). Records are
        never edited: a correction is a new record whose `corrects_id` names a check of the same
        standard that was not corrected yet. Publishes `standard.check_recorded`.
        """
        _check_unit_fits(data.get("unit"), Check.__table__.c.unit, "unit")
        principal = current_principal()
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        if data.get("corrects_id") is not None:
            problem = correction_problem(session, Check, Check.standard_id, standard.id, data["corrects_id"],
                                         "check record of this standard")
            if problem:
                validation_error({"corrects_id": [problem]})
        passed = domain.check_passed(data["kind"], data["value"], data["limit"])
        check = Check(standard_id=standard.id, passed=passed, recorded_by=principal.client_id, **data)
        session.add(check)
        flush_or_409(session)
        events.publish(session, "standard.check_recorded", check)
        commit_or_409(session)
        location = url_for("standards.StandardCheck", standard_id=standard.id, check_id=check.id)
        return check, 201, {"Location": location}


@blp.route("/standards/<standard_id>/checks/<check_id>")
class StandardCheck(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.CheckSchema)
    def get(self, standard_id, check_id):
        """One check record (roles: admin, lab_staff)"""
        return record_or_404(db_session(), Check, check_id, Check.standard_id, standard_id, "check")

"""Enterprise instruments under periodic verification: registration, CSV import and verifications.

Who may do what:
- admin, lab_staff: every organization's instruments; only they record verifications (the institute
  verifies).
- enterprise: its own organization's instruments only (another organization's is "not found"); it reads
  its verifications but does not record them.
- partner: no access (403).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import marshmallow as ma
from flask import request, url_for
from flask.views import MethodView
from flask_smorest.fields import Upload
from sqlalchemy import false, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import RequestEntityTooLarge

from services.inventory import domain, events
from services.inventory.api.records import correction_problem, record_in_force, record_or_404
from services.inventory.csv_import import parse_instruments_csv
from services.inventory.models import Instrument, Organization, Standard, Verification
from services.inventory.schemas import (
    ImportQuerySchema,
    ImportResultSchema,
    InstrumentPatchSchema,
    InstrumentQuerySchema,
    InstrumentSchema,
    VerificationSchema,
)
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, ProblemSchema, not_found, validation_error
from shared.timeutil import institute_today
from shared.web import (
    Blueprint,
    check_if_match,
    commit_or_409,
    db_session,
    etag_of,
    find_by_id,
    flush_or_409,
    get_or_404,
    paginate_query,
)

blp = Blueprint("instruments", __name__, url_prefix="/api/v1",
                description="Enterprise instruments under periodic verification (强制检定 and others).")

MANAGERS = ("admin", "lab_staff", "enterprise")
VERIFIERS = ("admin", "lab_staff")

# An import is at most this large (the file itself); a centre's yearly workload of ~1,100 instruments is
# well under 1 MB. Checked per request, so the rest of the API keeps the app-wide limit.
MAX_IMPORT_BYTES = 5 * 1024 * 1024
_MULTIPART_OVERHEAD = 64 * 1024

_SINGLE_LINE_FIELDS = ("name", "category", "serial_number", "manufacturer", "model", "regulation", "location")
_UNIQUE_KEY_FIELDS = ["organization_id", "serial_number", "category"]
# Fields a client may change with PATCH or a re-import (last_verified_on follows verifications).
_UPDATABLE_FIELDS = ("name", "category", "manufacturer", "model", "serial_number", "regulation", "mandatory",
                     "interval_months", "location")


# --- Input schemas (the shared resource schemas plus the rules of this endpoint) --------------------


class _InstrumentText:
    """Trims the one-line text fields as the CSV import does (the schema refuses control characters)."""

    @ma.pre_load
    def _trim(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in _SINGLE_LINE_FIELDS:
            value = data.get(name)
            if isinstance(value, str):
                value = value.strip()
                # A blank optional field is no value; a blank required one fails its length check.
                data[name] = value if value or name in ("name", "category", "serial_number") else None
        return data


class InstrumentCreateSchema(_InstrumentText, InstrumentSchema):
    """An instrument to register."""

    organization_id = ma.fields.String(load_default=None, allow_none=True, metadata={
        "description": "The owning organization. Required for admin and lab_staff; an enterprise client may "
                       "omit it (its own organization) and may not name another one."})


class InstrumentChangesSchema(_InstrumentText, InstrumentPatchSchema):
    """Fields to change (all optional); last_verified_on and due_on follow verifications."""


class ImportFileSchema(ma.Schema):
    file = Upload(required=True, metadata={
        "description": f"The CSV file (UTF-8, with or without BOM, header row first; at most "
                       f"{MAX_IMPORT_BYTES // (1024 * 1024)} MB)"})


class ImportRowProblemSchema(ma.Schema):
    row = ma.fields.Integer(metadata={"description": "Spreadsheet row number: the header is row 1"})
    field = ma.fields.String(metadata={"description": "The column, or `file` for the file as a whole"})
    message = ma.fields.String()


class ImportProblemSchema(ProblemSchema):
    rows = ma.fields.List(ma.fields.Nested(ImportRowProblemSchema), metadata={
        "description": "Every problem found, ordered by row"})


# --- Helpers --------------------------------------------------------------------------------------


def _canonical_id(value: Any) -> str | None:
    """The id in its stored form, or None when `value` cannot be an id (so it names nothing).

    Ids here are accepted in any spelling of the UUID (upper case, without hyphens...).
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _instrument_or_404(session: Session, instrument_id: str, principal: Principal, *,
                       lock: bool = False) -> Instrument:
    instrument = get_or_404(session, Instrument, _canonical_id(instrument_id), "instrument", lock=lock)
    if principal.role == "enterprise" and instrument.organization_id != principal.organization_id:
        not_found("instrument")
    return instrument


def _owning_organization(session: Session, principal: Principal, given: str | None,
                         field: str = "organization_id") -> str:
    """The organization an instrument is written for; an enterprise writes for its own only (else 404)."""
    if principal.role == "enterprise":
        if given is None:
            given = principal.organization_id
        if given is None:
            validation_error({field: "is required: this client belongs to no organization"})
        if _canonical_id(given) != principal.organization_id:
            not_found("organization")
    elif given is None:
        validation_error({field: "is required"})
    canonical = _canonical_id(given)
    if find_by_id(session, Organization, canonical) is None:
        validation_error({field: "names no organization"})
    return canonical


def _find_same(session: Session, organization_id: str, serial_number: str,
               category: str) -> Instrument | None:
    return session.scalar(select(Instrument).where(Instrument.organization_id == organization_id,
                                                   Instrument.serial_number == serial_number,
                                                   Instrument.category == category))


def _duplicate(existing: Instrument | None) -> Problem:
    conflicts = [] if existing is None else [{
        "kind": "instrument", "id": existing.id, "organization_id": existing.organization_id,
        "serial_number": existing.serial_number, "category": existing.category, "status": existing.status}]
    detail = ("This organization already has an instrument with this serial_number and category"
              + (f" ({existing.id}, {existing.status})." if existing is not None else "."))
    return Problem(409, detail, code="duplicate", fields=_UNIQUE_KEY_FIELDS, conflicts=conflicts,
                   existing_id=None if existing is None else existing.id)


def _refuse_if_removed(instrument: Instrument) -> None:
    if instrument.status == "removed":
        raise Problem(409, "The instrument has been removed; its history is kept but it cannot be changed "
                           "or verified.", code="removed",
                      conflicts=[{"kind": "instrument", "id": instrument.id, "status": instrument.status}])


def _apply_changes(instrument: Instrument, changes: dict) -> set[str]:
    """Set the given fields; returns the names of those whose value actually changed."""
    changed = set()
    for name, value in changes.items():
        if name in _UPDATABLE_FIELDS and getattr(instrument, name) != value:
            setattr(instrument, name, value)
            changed.add(name)
    return changed


def _effective_latest_verification(session: Session, instrument_id: str) -> Verification | None:
    """The verification in force (see ``records.record_in_force``)."""
    return record_in_force(session, Verification, Verification.instrument_id, instrument_id,
                           Verification.verified_on)


def _in_effect(instrument: Instrument, verification: Verification | None) -> bool:
    """Whether the instrument's last_verified_on / due_on come from this verification."""
    return verification is not None and instrument.last_verified_on == verification.verified_on


def _recompute_due_on(session: Session, instrument: Instrument) -> None:
    """due_on after the interval changed: from the verification in effect, else from the registration."""
    latest = _effective_latest_verification(session, instrument.id)
    if _in_effect(instrument, latest):
        instrument.due_on = domain.verification_next_due_on(latest.verified_on, instrument.interval_months,
                                                            latest.result)
    else:
        instrument.due_on = domain.instrument_due_on(instrument.last_verified_on, instrument.interval_months,
                                                     instrument.registered_on)


def _with_etag(instrument: Instrument, status: int = 200, **headers: str):
    return instrument, status, {"ETag": etag_of(instrument.version), **headers}


def _too_large() -> Problem:
    return Problem(413, f"The file is larger than {MAX_IMPORT_BYTES} bytes; split it into several imports.",
                   code="too_large")


def _limit_upload_size(view):
    """Refuse bodies beyond the import limit with 413 before the multipart body is read."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        request.max_content_length = MAX_IMPORT_BYTES + _MULTIPART_OVERHEAD
        try:
            return view(*args, **kwargs)
        except RequestEntityTooLarge:
            raise _too_large() from None

    return wrapper


_CONFLICT_DOC = {"schema": ProblemSchema, "content_type": "application/problem+json"}
_STALE_IF_MATCH = "If-Match names another version than the current one."


# --- Instruments ----------------------------------------------------------------------------------


@blp.route("/instruments")
class Instruments(MethodView):
    @require(*MANAGERS)
    @blp.arguments(InstrumentQuerySchema, location="query")
    @blp.response(200, InstrumentSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List instruments, those due first

        Ordered by due_on, then id. `status` defaults to `active`. `due_before` includes instruments due
        on that date. An enterprise client sees only its own organization's instruments (naming another
        organization_id gives an empty list).
        """
        principal = current_principal()
        conditions = [Instrument.status == args["status"]]
        wanted = args.get("organization_id")
        if principal.role == "enterprise":
            own = principal.organization_id
            if own is None or (wanted is not None and _canonical_id(wanted) != own):
                own = None  # another organization's instruments, or none at all: an empty list
            conditions.append(false() if own is None else Instrument.organization_id == own)
        elif wanted is not None:
            canonical = _canonical_id(wanted)
            conditions.append(false() if canonical is None else Instrument.organization_id == canonical)
        if args.get("due_before") is not None:
            conditions.append(Instrument.due_on <= args["due_before"])
        if args.get("mandatory") is not None:
            conditions.append(Instrument.mandatory == args["mandatory"])
        query = select(Instrument).where(*conditions).order_by(Instrument.due_on, Instrument.id)
        return paginate_query(db_session(), query, pagination_parameters)

    @require(*MANAGERS)
    @blp.arguments(InstrumentCreateSchema)
    @blp.response(201, InstrumentSchema, headers={"Location": {"schema": {"type": "string"}},
                                                  "ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(409, description="`code: duplicate`: the organization already has an instrument with "
                                       "this serial_number and category (`existing_id`, `conflicts`).",
                      **_CONFLICT_DOC)
    def post(self, data):
        """Register an instrument

        A never verified instrument is due at once: its due_on is its registration date. Otherwise due_on
        is last_verified_on + interval_months. Publishes `instrument.registered`.
        """
        principal = current_principal()
        session = db_session()
        organization_id = _owning_organization(session, principal, data.pop("organization_id", None))
        existing = _find_same(session, organization_id, data["serial_number"], data["category"])
        if existing is not None:
            raise _duplicate(existing)
        today = institute_today()
        instrument = Instrument(organization_id=organization_id, registered_on=today, status="active", **data)
        instrument.due_on = domain.instrument_due_on(instrument.last_verified_on, instrument.interval_months,
                                                     today)
        session.add(instrument)

        def registered_meanwhile() -> None:  # by another request, since the check above
            raise _duplicate(_find_same(session, organization_id, data["serial_number"], data["category"]))

        flush_or_409(session, what="instrument", on_integrity_error=registered_meanwhile)
        events.publish(session, "instrument.registered", instrument)
        commit_or_409(session, what="instrument")
        return _with_etag(instrument, 201,
                          Location=url_for("instruments.instrument", instrument_id=instrument.id))


@blp.route("/instruments/<instrument_id>", endpoint="instrument")
class InstrumentById(MethodView):
    @require(*MANAGERS)
    @blp.response(200, InstrumentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    def get(self, instrument_id):
        """One instrument (removed ones too: their history is kept)"""
        return _with_etag(_instrument_or_404(db_session(), instrument_id, current_principal()))

    @require(*MANAGERS)
    @blp.arguments(InstrumentChangesSchema(partial=True))
    @blp.response(200, InstrumentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(409, description="`code: duplicate` (serial_number/category taken), `removed` "
                                       "(a removed instrument cannot be changed) or `concurrent_update`.",
                      **_CONFLICT_DOC)
    @blp.alt_response(412, description=_STALE_IF_MATCH, **_CONFLICT_DOC)
    def patch(self, changes, instrument_id):
        """Change an instrument

        Only the fields given change. Changing interval_months moves due_on (from the verification in
        effect, else from the registration). Honours If-Match. Publishes `instrument.updated` when a value
        changed.
        """
        principal = current_principal()
        session = db_session()
        instrument = _instrument_or_404(session, instrument_id, principal, lock=True)
        check_if_match(instrument.version)
        _refuse_if_removed(instrument)
        serial_number = changes.get("serial_number", instrument.serial_number)
        category = changes.get("category", instrument.category)
        if (serial_number, category) != (instrument.serial_number, instrument.category):
            existing = _find_same(session, instrument.organization_id, serial_number, category)
            if existing is not None and existing.id != instrument.id:
                raise _duplicate(existing)
        changed = _apply_changes(instrument, changes)
        if not changed:
            return _with_etag(instrument)
        if "interval_months" in changed:
            _recompute_due_on(session, instrument)
        organization_id = instrument.organization_id  # a rollback expires the object

        def taken_meanwhile() -> None:
            raise _duplicate(_find_same(session, organization_id, serial_number, category))

        flush_or_409(session, what="instrument", on_integrity_error=taken_meanwhile)
        events.publish(session, "instrument.updated", instrument)
        commit_or_409(session, what="instrument")
        return _with_etag(instrument)

    @require(*MANAGERS)
    @blp.response(200, InstrumentSchema, headers={"ETag": {"schema": {"type": "string"}}})
    @blp.alt_response(412, description=_STALE_IF_MATCH, **_CONFLICT_DOC)
    def delete(self, instrument_id):
        """Remove an instrument

        The instrument is not erased: it is marked `status: removed` (its verifications are kept), leaves
        the default list and the due dates, and can no longer be changed or verified. Answers **200 with
        the removed instrument** (not 204), so the client sees its final state and version. Removing a
        removed instrument changes nothing and answers the same. Honours If-Match. Publishes
        `instrument.removed`.
        """
        principal = current_principal()
        session = db_session()
        instrument = _instrument_or_404(session, instrument_id, principal, lock=True)
        check_if_match(instrument.version)
        if instrument.status == "removed":
            return _with_etag(instrument)
        instrument.status = "removed"
        flush_or_409(session, what="instrument")
        events.publish(session, "instrument.removed", instrument)
        commit_or_409(session, what="instrument")
        return _with_etag(instrument)


# --- CSV import -----------------------------------------------------------------------------------


@blp.route("/instruments/import")
class InstrumentImport(MethodView):
    @require(*MANAGERS)
    @_limit_upload_size
    @blp.arguments(ImportQuerySchema, location="query")
    @blp.arguments(ImportFileSchema, location="files")
    @blp.response(200, ImportResultSchema)
    @blp.alt_response(422, schema=ImportProblemSchema, content_type="application/problem+json", description=(
        "Nothing was imported. A missing `file` part or `organization_id`, or an unknown organization, "
        "is named in `errors` as usual. Problems in the file (`code: invalid_file`) are listed in `rows` "
        "as `{row, field, message}` (row = spreadsheet row number, the header is row 1; field `file` for "
        "the file as a whole) and also in `errors`, keyed `\"row <row>.<field>\"` "
        "(e.g. `\"row 3.interval_months\"`)."))
    @blp.alt_response(413, description=f"The file is larger than {MAX_IMPORT_BYTES} bytes.", **_CONFLICT_DOC)
    @blp.alt_response(409, description="`code: duplicate` or `concurrent_update`: another request changed "
                                       "this organization's instruments at the same time; retry.",
                      **_CONFLICT_DOC)
    def post(self, query, files):
        """Import instruments from a CSV file (all or nothing)

        `multipart/form-data` with the file in the part `file`. The header row names the columns after the
        instrument's fields: `name, category, serial_number, interval_months` (required) and
        `manufacturer, model, regulation, mandatory, last_verified_on, location`; booleans are
        `true`/`false`; dates `YYYY-MM-DD`. Each row whose (serial_number, category) names an existing
        instrument of the organization updates it (the columns present in the file; a blank cell clears
        an optional field; last_verified_on of an existing instrument is left to its verifications), any
        other row registers a new instrument. A row naming a removed instrument is an error. `updated`
        counts the rows that named an existing instrument; `instrument.updated` is published only for
        those where a value changed, `instrument.registered` for each new one, all in the same transaction
        as the writes. Any problem: 422 and nothing is written. Files over 5 MB: 413.
        """
        principal = current_principal()
        session = db_session()
        organization_id = _owning_organization(session, principal, query["organization_id"])
        data = files["file"].stream.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            raise _too_large()
        parsed = parse_instruments_csv(data, today=institute_today())
        existing = {(i.serial_number, i.category): i for i in session.scalars(
            select(Instrument).where(Instrument.organization_id == organization_id).with_for_update())}
        problems = list(parsed.errors)
        for row, row_number in zip(parsed.rows, parsed.row_numbers, strict=True):
            found = existing.get((row["serial_number"], row["category"]))
            if found is not None and found.status == "removed":
                problems.append({"row": row_number, "field": "serial_number", "message": (
                    f"names instrument {found.id}, which has been removed; a removed instrument cannot be "
                    "imported again")})
        if problems:
            raise _import_rejected(problems)

        today = institute_today()
        registered: list[Instrument] = []
        changed: list[Instrument] = []
        for row in parsed.rows:
            instrument = existing.get((row["serial_number"], row["category"]))
            if instrument is None:
                instrument = Instrument(organization_id=organization_id, registered_on=today, status="active",
                                        **row)
                instrument.due_on = domain.instrument_due_on(instrument.last_verified_on,
                                                             instrument.interval_months, today)
                session.add(instrument)
                existing[(row["serial_number"], row["category"])] = instrument
                registered.append(instrument)
                continue
            fields_changed = _apply_changes(
                instrument, {name: value for name, value in row.items() if name != "last_verified_on"})
            if "interval_months" in fields_changed:
                _recompute_due_on(session, instrument)
            if fields_changed:
                changed.append(instrument)

        def registered_meanwhile() -> None:
            raise Problem(409, "Another request registered some of these instruments at the same time; "
                               "nothing was imported, retry.", code="duplicate", fields=_UNIQUE_KEY_FIELDS)

        flush_or_409(session, what="instrument", on_integrity_error=registered_meanwhile)
        for instrument in registered:
            events.publish(session, "instrument.registered", instrument)
        for instrument in changed:
            events.publish(session, "instrument.updated", instrument)
        commit_or_409(session, what="instrument")
        return {"created": len(registered), "updated": len(parsed.rows) - len(registered)}


def _import_rejected(problems: list[dict]) -> Problem:
    problems = sorted(problems, key=lambda problem: problem["row"])
    errors: dict[str, list[str]] = {}
    for problem in problems:
        errors.setdefault(f"row {problem['row']}.{problem['field']}", []).append(problem["message"])
    rows = len({problem["row"] for problem in problems})
    return Problem(422, f"The file has {len(problems)} problem(s) on {rows} row(s); nothing was imported.",
                   code="invalid_file", errors=errors, rows=problems)


# --- Verifications --------------------------------------------------------------------------------


@blp.route("/instruments/<instrument_id>/verifications")
class InstrumentVerifications(MethodView):
    @require(*MANAGERS)
    @blp.response(200, VerificationSchema(many=True))
    @blp.paginate()
    def get(self, instrument_id, pagination_parameters):
        """The instrument's verification records, oldest first (by verified_on, then when recorded)"""
        session = db_session()
        instrument = _instrument_or_404(session, instrument_id, current_principal())
        query = (select(Verification).where(Verification.instrument_id == instrument.id)
                 .order_by(Verification.verified_on, Verification.created_at, Verification.id))
        return paginate_query(session, query, pagination_parameters)

    @require(*VERIFIERS)
    @blp.arguments(VerificationSchema)
    @blp.response(201, VerificationSchema, headers={"Location": {"schema": {"type": "string"}}})
    @blp.alt_response(409, description="`code: removed`: a removed instrument cannot be verified.",
                      **_CONFLICT_DOC)
    def post(self, data, instrument_id):
        """Record a verification (admin, lab_staff)

        next_due_on = verified_on + the instrument's interval when passed, verified_on itself when failed.
        The instrument's last_verified_on and due_on follow its latest verification by verified_on: a
        record older than the one in effect changes neither; a correction (`corrects_id`, a record of
        the same instrument not corrected yet) of the record in effect replaces its effect. `standard_id`,
        when given, must name a standard. Publishes `instrument.verified` (the instrument plus
        `verification`).
        """
        principal = current_principal()
        session = db_session()
        instrument = _instrument_or_404(session, instrument_id, principal, lock=True)
        _refuse_if_removed(instrument)
        errors: dict[str, str] = {}
        standard_id = data.get("standard_id")
        if standard_id is not None:
            standard_id = _canonical_id(standard_id)
            if find_by_id(session, Standard, standard_id) is None:
                errors["standard_id"] = "names no standard"
        corrected = None
        if data.get("corrects_id") is not None:
            corrects_id = _canonical_id(data["corrects_id"])
            problem = correction_problem(session, Verification, Verification.instrument_id, instrument.id,
                                         corrects_id, "verification of this instrument")
            if problem:
                errors["corrects_id"] = problem
            else:
                corrected = find_by_id(session, Verification, corrects_id)
        if errors:
            validation_error(errors)

        previous = _effective_latest_verification(session, instrument.id)
        verification = Verification(
            instrument_id=instrument.id, verified_on=data["verified_on"], result=data["result"],
            certificate_number=data.get("certificate_number"), standard_id=standard_id,
            notes=data.get("notes"),
            corrects_id=None if corrected is None else corrected.id, recorded_by=principal.client_id,
            next_due_on=domain.verification_next_due_on(data["verified_on"], instrument.interval_months,
                                                        data["result"]))
        session.add(verification)
        flush_or_409(session, what="instrument")
        if corrected is not None and corrected is previous and _in_effect(instrument, corrected):
            # The record in effect was wrong: the instrument follows what is now the latest record.
            latest = _effective_latest_verification(session, instrument.id)
            instrument.last_verified_on = latest.verified_on
            instrument.due_on = domain.verification_next_due_on(
                latest.verified_on, instrument.interval_months, latest.result)
        elif instrument.last_verified_on is None or verification.verified_on >= instrument.last_verified_on:
            instrument.last_verified_on = verification.verified_on
            instrument.due_on = verification.next_due_on
        flush_or_409(session, what="instrument")
        events.publish(session, "instrument.verified", instrument, verification=verification)
        commit_or_409(session, what="instrument")
        location = url_for("instruments.verification", instrument_id=instrument.id,
                           verification_id=verification.id)
        return verification, 201, {"Location": location}


@blp.route("/instruments/<instrument_id>/verifications/<verification_id>", endpoint="verification")
class InstrumentVerification(MethodView):
    @require(*MANAGERS)
    @blp.response(200, VerificationSchema)
    def get(self, instrument_id, verification_id):
        """One verification record"""
        session = db_session()
        instrument = _instrument_or_404(session, instrument_id, current_principal())
        return record_or_404(session, Verification, _canonical_id(verification_id),
                             Verification.instrument_id, instrument.id, "verification")

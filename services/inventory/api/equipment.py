"""The equipment of a standard (main standard instruments and auxiliary equipment) and its calibrations.

Role rules: everything here is the lab's own record keeping, for admin and lab_staff only (a partner
sees a public standard's equipment inside the standard itself).

A standard's `usable` and `blocking_reasons` depend on its equipment's due dates. Whenever a change
here alters them, the standard's version is bumped and `standard.updated` is published next to the
equipment event, so that read models of standards stay true.
"""

from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.inventory import domain, events, schemas
from services.inventory.api.records import correction_problem, record_in_force, record_or_404
from services.inventory.api.standards import STAFF, standard_state
from services.inventory.models import Calibration, Equipment, Standard
from shared.auth import current_principal, require
from shared.errors import ProblemSchema, validation_error
from shared.timeutil import utcnow
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

blp = Blueprint("equipment", __name__, url_prefix="/api/v1",
                description="Equipment of the standards and its calibration records.")


class EquipmentPatchSchema(schemas.EquipmentSchema):
    """PATCH body of a piece of equipment: every field optional."""


_PATCH_PARTIAL = tuple(EquipmentPatchSchema._declared_fields)


def _headers(equipment: Equipment) -> dict[str, str]:
    return {"ETag": etag_of(equipment.version)}


def latest_calibration(session: Session, equipment_id: str) -> Calibration | None:
    """The calibration in force (see ``records.record_in_force``)."""
    return record_in_force(session, Calibration, Calibration.equipment_id, equipment_id,
                           Calibration.calibrated_on)


def follow_calibration_in_force(equipment: Equipment, latest: Calibration | None) -> None:
    """Set last_calibrated_on and due_on from the calibration in force and the current interval."""
    if latest is None:
        equipment.last_calibrated_on = None
        equipment.due_on = None
        return
    due_on = domain.calibration_due_on(latest.calibrated_on, equipment.calibration_interval_months,
                                       latest.valid_until, latest.result)
    equipment.last_calibrated_on = latest.calibrated_on
    # No interval any more and no valid_until on the record: the due date the record was given stays.
    equipment.due_on = due_on if due_on is not None else latest.next_due_on


def _publish_and_commit(session: Session, event: str, equipment: Equipment, before: tuple[bool, list[str]],
                        **extra) -> None:
    """Flush; publish ``event`` with the standard's usability now (``before`` is what it was); when that
    changed, also publish standard.updated with a new version of the standard; commit."""
    flush_or_409(session, what="equipment")
    standard = equipment.standard
    after = standard_state(standard)
    usable, reasons = after
    events.publish(session, event, equipment, **extra, standard_usable=usable,
                   standard_blocking_reasons=reasons)
    if after != before:
        standard.updated_at = utcnow()  # bumps the version: the standard's representation changed
        flush_or_409(session, what="standard")
        events.publish(session, "standard.updated", standard)
    commit_or_409(session, what="equipment")


@blp.route("/standards/<standard_id>/equipment")
class StandardEquipment(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.EquipmentSchema(many=True))
    @blp.paginate()
    def get(self, standard_id, pagination_parameters):
        """The equipment of a standard, in the order it was registered (roles: admin, lab_staff)"""
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        query = (select(Equipment).where(Equipment.standard_id == standard.id)
                 .order_by(Equipment.created_at, Equipment.id))
        return paginate_query(session, query, pagination_parameters)

    @require(*STAFF)
    @blp.arguments(schemas.EquipmentSchema)
    @blp.response(201, schemas.EquipmentSchema)
    def post(self, data, standard_id):
        """Register a piece of equipment of a standard

        Roles: admin, lab_staff. New equipment is never calibrated, so it blocks the standard
        (`equipment_never_calibrated:<id>`) until its first calibration is recorded. Publishes
        `equipment.registered` (with `standard_usable` and `standard_blocking_reasons`) and
        `standard.updated` when the standard's usability changed.
        """
        session = db_session()
        standard = get_or_404(session, Standard, standard_id, "standard")
        before = standard_state(standard)
        equipment = Equipment(standard=standard, **data)
        session.add(equipment)
        _publish_and_commit(session, "equipment.registered", equipment, before)
        location = url_for("equipment.EquipmentResource", equipment_id=equipment.id)
        return equipment, 201, {"Location": location, **_headers(equipment)}


@blp.route("/equipment/<equipment_id>")
class EquipmentResource(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.EquipmentSchema)
    def get(self, equipment_id):
        """Read a piece of equipment (ETag = its version; roles: admin, lab_staff)"""
        equipment = get_or_404(db_session(), Equipment, equipment_id, "equipment")
        return equipment, 200, _headers(equipment)

    @require(*STAFF)
    @blp.arguments(EquipmentPatchSchema(partial=_PATCH_PARTIAL))
    @blp.response(200, schemas.EquipmentSchema)
    @blp.alt_response(412, schema=ProblemSchema, description="If-Match does not match the current ETag")
    def patch(self, data, equipment_id):
        """Change a piece of equipment

        Roles: admin, lab_staff. Honours `If-Match` (412). Changing `calibration_interval_months`
        recomputes `due_on` from the calibration in force (its `valid_until` still wins, and a failed
        one keeps the equipment due on its date); with no
        interval and no `valid_until`, the due date that calibration was given stays. Publishes
        `equipment.updated` and, when the standard's usability changed, `standard.updated`.
        """
        session = db_session()
        equipment = get_or_404(session, Equipment, equipment_id, "equipment")
        check_if_match(equipment.version)
        before = standard_state(equipment.standard)
        # Read before changing anything, so that the query's autoflush writes nothing half-done.
        latest = latest_calibration(session, equipment.id)
        for key, value in data.items():
            setattr(equipment, key, value)
        if not session.is_modified(equipment):
            return equipment, 200, _headers(equipment)
        follow_calibration_in_force(equipment, latest)
        _publish_and_commit(session, "equipment.updated", equipment, before)
        return equipment, 200, _headers(equipment)


@blp.route("/equipment/<equipment_id>/calibrations")
class EquipmentCalibrations(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.CalibrationSchema(many=True))
    @blp.paginate()
    def get(self, equipment_id, pagination_parameters):
        """The calibration records of a piece of equipment, oldest first (roles: admin, lab_staff)

        Corrected records stay in the list; the correction names them in `corrects_id`.
        """
        session = db_session()
        equipment = get_or_404(session, Equipment, equipment_id, "equipment")
        query = (select(Calibration).where(Calibration.equipment_id == equipment.id)
                 .order_by(Calibration.calibrated_on, Calibration.created_at, Calibration.id))
        return paginate_query(session, query, pagination_parameters)

    @require(*STAFF)
    @blp.arguments(schemas.CalibrationSchema)
    @blp.response(201, schemas.CalibrationSchema)
    def post(self, data, equipment_id):
        """Record a calibration

        Roles: admin, lab_staff. `next_due_on` is `valid_until` when given, else `calibrated_on` + the
        equipment's interval; equipment without an interval needs `valid_until` (422). A failed
        calibration (`result: fail`) leaves the equipment due at once: `next_due_on` is `calibrated_on`
        (overdue from the next day, blocking the standard until a passing calibration is recorded),
        whatever the interval or `valid_until`. `limited` (usable within the restrictions the certificate
        states) counts as `pass`. `calibrated_on` in the future is 422. The equipment's
        `last_calibrated_on` and `due_on` follow the calibration in force: the latest by `calibrated_on`
        (a record entered late for an earlier date does not move `due_on` back); a correction
        (`corrects_id`, a record of the same equipment not corrected yet) replaces the effect of the
        record it corrects. Publishes
        `equipment.calibrated` (with `calibration`, `standard_usable`, `standard_blocking_reasons`) and,
        when the standard's usability changed, `standard.updated`.
        """
        principal = current_principal()
        session = db_session()
        equipment = get_or_404(session, Equipment, equipment_id, "equipment")
        if data.get("corrects_id") is not None:
            problem = correction_problem(session, Calibration, Calibration.equipment_id, equipment.id,
                                         data["corrects_id"], "calibration record of this equipment")
            if problem:
                validation_error({"corrects_id": [problem]})
        next_due_on = domain.calibration_due_on(data["calibrated_on"], equipment.calibration_interval_months,
                                                data.get("valid_until"), data["result"])
        if next_due_on is None:
            validation_error({"valid_until": [
                "is required: the equipment has no calibration interval to compute the next due date from."]})
        before = standard_state(equipment.standard)
        calibration = Calibration(equipment_id=equipment.id, next_due_on=next_due_on,
                                  recorded_by=principal.client_id, **data)
        session.add(calibration)
        flush_or_409(session, what="equipment")
        follow_calibration_in_force(equipment, latest_calibration(session, equipment.id))
        equipment.updated_at = utcnow()  # a new record is a change of the equipment even if due_on stays
        _publish_and_commit(session, "equipment.calibrated", equipment, before, calibration=calibration)
        location = url_for("equipment.EquipmentCalibration", equipment_id=equipment.id,
                           calibration_id=calibration.id)
        return calibration, 201, {"Location": location}


@blp.route("/equipment/<equipment_id>/calibrations/<calibration_id>")
class EquipmentCalibration(MethodView):
    @require(*STAFF)
    @blp.response(200, schemas.CalibrationSchema)
    def get(self, equipment_id, calibration_id):
        """One calibration record (roles: admin, lab_staff)"""
        return record_or_404(db_session(), Calibration, calibration_id, Calibration.equipment_id,
                             equipment_id, "calibration")

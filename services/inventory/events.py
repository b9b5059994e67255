"""Events the inventory publishes: their types, payload schemas, and the one function that records
them in the outbox (in the caller's transaction). Each payload is the entity's current state."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.inventory import schemas
from services.inventory.models import OutboxMessage
from shared.messaging.outbox import Outbox

SOURCE = "/services/inventory"
PREFIX = "refstd.inventory."

outbox = Outbox(OutboxMessage, SOURCE)


class StandardStateSchema(schemas.StandardSchema):
    """standard.* events: the standard with its equipment, usable and blocking reasons."""


class StatusChangedSchema(schemas.StandardSchema):
    change = schemas.fields.Nested(schemas.StatusChangeSchema)


class EquipmentCalibratedSchema(schemas.EquipmentSchema):
    calibration = schemas.fields.Nested(schemas.CalibrationSchema)
    standard_usable = schemas.fields.Boolean()
    standard_blocking_reasons = schemas.fields.List(schemas.fields.String())


class EquipmentStateSchema(schemas.EquipmentSchema):
    standard_usable = schemas.fields.Boolean()
    standard_blocking_reasons = schemas.fields.List(schemas.fields.String())


class InstrumentVerifiedSchema(schemas.InstrumentSchema):
    verification = schemas.fields.Nested(schemas.VerificationSchema)


# event type (without prefix) -> payload schema; consumers validate against these.
PAYLOADS: dict[str, type[schemas.Schema]] = {
    "organization.registered": schemas.OrganizationSchema,
    "organization.updated": schemas.OrganizationSchema,
    "standard.registered": StandardStateSchema,
    "standard.updated": StandardStateSchema,
    "standard.status_changed": StatusChangedSchema,
    "equipment.registered": EquipmentStateSchema,
    "equipment.updated": EquipmentStateSchema,
    "equipment.calibrated": EquipmentCalibratedSchema,
    "standard.check_recorded": schemas.CheckSchema,
    "instrument.registered": schemas.InstrumentSchema,
    "instrument.updated": schemas.InstrumentSchema,
    "instrument.removed": schemas.InstrumentSchema,
    "instrument.verified": InstrumentVerifiedSchema,
}


def publish(session: Session, name: str, entity, **extra) -> dict:
    """Record event ``refstd.inventory.<name>`` carrying ``entity``'s state (plus ``extra`` members).

    Call after ``session.flush()`` so that ids, versions and defaults are filled in.
    """
    schema = PAYLOADS[name]()
    data = schema.dump(entity)
    for key, value in extra.items():
        field = schema.fields.get(key)
        data[key] = field.serialize(key, extra) if field is not None else value
    return outbox.add(session, PREFIX + name, getattr(entity, "id", None), data)

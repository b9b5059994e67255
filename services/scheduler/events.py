"""Events of the scheduler: those it publishes (types, payload schemas, the outbox) and the handlers
of the inventory events that feed its read models (organizations, standards, every due item)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.scheduler import schemas
from services.scheduler.models import KnownOrganization, KnownStandard, OutboxMessage, TrackedItem
from services.topology import SCHEDULER_INVENTORY
from shared.messaging.outbox import Outbox

SOURCE = "/services/scheduler"
PREFIX = "refstd.scheduler."
INVENTORY = "refstd.inventory."

outbox = Outbox(OutboxMessage, SOURCE)

# event type (without prefix) -> payload schema.
PAYLOADS: dict[str, type[schemas.Schema]] = {
    "recalibration.due_soon": schemas.NoticeSchema,
    "recalibration.overdue": schemas.NoticeSchema,
    "certificate.renewal_due": schemas.NoticeSchema,
    "booking.requested": schemas.BookingEventSchema,
    "booking.confirmed": schemas.BookingEventSchema,
    "booking.rejected": schemas.BookingEventSchema,
    "booking.cancelled": schemas.BookingEventSchema,
    "booking.reminder": schemas.BookingEventSchema,
}


def publish(session: Session, name: str, subject: str | None, data: dict) -> dict:
    """Record event ``refstd.scheduler.<name>`` in the outbox, in the caller's transaction."""
    payload = PAYLOADS[name]().dump(data)
    return outbox.add(session, PREFIX + name, subject, payload)


# -- inbound: inventory events -> read models ----------------------------------------------------

INVENTORY_QUEUE = SCHEDULER_INVENTORY


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _newer(current, version: int) -> bool:
    """Apply an event only if it carries a newer state than the one we hold (replays and reordering)."""
    return current is None or version > current.source_version


def _upsert_item(session: Session, kind: str, item_id: str, version: int, **values) -> TrackedItem | None:
    item = session.get(TrackedItem, (kind, item_id))
    if not _newer(item, version):
        return None
    if item is None:
        item = TrackedItem(item_kind=kind, item_id=item_id, source_version=version, **values)
        session.add(item)
    else:
        for key, value in values.items():
            setattr(item, key, value)
        item.source_version = version
    return item


def on_organization(session: Session, event: dict) -> None:
    data = event["data"]
    organization = session.get(KnownOrganization, data["id"])
    if not _newer(organization, data["version"]):
        return
    if organization is None:
        organization = KnownOrganization(id=data["id"], source_version=data["version"])
        session.add(organization)
    organization.name = data["name"]
    organization.name_en = data.get("name_en")
    organization.kind = data["kind"]
    organization.contacts = data.get("contacts") or []
    organization.source_version = data["version"]


def on_standard(session: Session, event: dict) -> None:
    data = event["data"]
    for equipment in data.get("equipment") or []:
        _apply_equipment(session, equipment, data)
    standard = session.get(KnownStandard, data["id"])
    if not _newer(standard, data["version"]):
        return
    was_usable = standard.usable if standard is not None else None
    if standard is None:
        standard = KnownStandard(id=data["id"], source_version=data["version"])
        session.add(standard)
    certificate = data.get("assessment_certificate") or {}
    custodian = data.get("custodian") or {}
    standard.code = data["code"]
    standard.name = data["name"]
    standard.name_en = data.get("name_en")
    standard.status = data["status"]
    standard.public = data.get("public", True)
    standard.bookable = data.get("bookable", True)
    standard.recovery_minutes = data.get("recovery_minutes") or 0
    standard.certificate_number = certificate.get("number")
    standard.certificate_expires_on = _date(certificate.get("expires_on"))
    standard.custodian_name = custodian.get("name")
    standard.custodian_email = custodian.get("email")
    standard.lab = data.get("lab")
    standard.usable = bool(data.get("usable"))
    standard.blocking_reasons = data.get("blocking_reasons") or []
    standard.source_version = data["version"]

    _upsert_item(
        session, "assessment_certificate", data["id"], data["version"],
        name=data["name"], serial_number=certificate.get("number"), category=None, regulation=None,
        mandatory=False, standard_id=data["id"], organization_id=None,
        custodian_name=standard.custodian_name, custodian_email=standard.custodian_email,
        due_on=standard.certificate_expires_on,
        active=data["status"] != "retired" and standard.certificate_expires_on is not None,
    )
    # Equipment notices go to the standard's custodian: keep the copies on its items current.
    session.execute(
        update(TrackedItem)
        .where(TrackedItem.item_kind == "equipment", TrackedItem.standard_id == data["id"])
        .values(custodian_name=standard.custodian_name, custodian_email=standard.custodian_email,
                active=data["status"] != "retired")
    )
    if was_usable is not False and not standard.usable:
        from services.scheduler.bookings import cancel_future_bookings

        cancel_future_bookings(session, standard.id, reason="standard_unavailable")


def _apply_equipment(session: Session, data: dict, standard: dict | None = None) -> None:
    known = standard or {}
    if not known:
        known_standard = session.get(KnownStandard, data["standard_id"])
        if known_standard is not None:
            known = {"custodian": {"name": known_standard.custodian_name, "email": known_standard.custodian_email},
                     "status": known_standard.status}
    custodian = known.get("custodian") or {}
    _upsert_item(
        session, "equipment", data["id"], data["version"],
        name=data["name"], serial_number=data.get("serial_number"), category=data.get("role"), regulation=None,
        mandatory=False, standard_id=data["standard_id"], organization_id=None,
        custodian_name=custodian.get("name"), custodian_email=custodian.get("email"),
        due_on=_date(data.get("due_on")), active=known.get("status") != "retired",
    )


def on_equipment(session: Session, event: dict) -> None:
    _apply_equipment(session, event["data"])


def on_instrument(session: Session, event: dict) -> None:
    data = event["data"]
    _upsert_item(
        session, "instrument", data["id"], data["version"],
        name=data["name"], serial_number=data.get("serial_number"), category=data.get("category"),
        regulation=data.get("regulation"), mandatory=bool(data.get("mandatory")), standard_id=None,
        organization_id=data["organization_id"], custodian_name=None, custodian_email=None,
        due_on=_date(data.get("due_on")), active=data.get("status", "active") == "active",
    )


INVENTORY_HANDLERS = {
    INVENTORY + "organization.registered": on_organization,
    INVENTORY + "organization.updated": on_organization,
    INVENTORY + "standard.registered": on_standard,
    INVENTORY + "standard.updated": on_standard,
    INVENTORY + "standard.status_changed": on_standard,
    INVENTORY + "equipment.registered": on_equipment,
    INVENTORY + "equipment.updated": on_equipment,
    INVENTORY + "equipment.calibrated": on_equipment,
    INVENTORY + "instrument.registered": on_instrument,
    INVENTORY + "instrument.updated": on_instrument,
    INVENTORY + "instrument.removed": on_instrument,
    INVENTORY + "instrument.verified": on_instrument,
}


class _Inbound(schemas.Schema):
    """The part of an inventory payload this service relies on; the rest passes through."""

    class Meta:
        unknown = schemas.ma.INCLUDE

    id = schemas.fields.String(required=True, validate=schemas.validate.Length(min=1, max=36))
    version = schemas.fields.Integer(required=True, strict=True)
    name = schemas.fields.String(required=True)


class _InboundOrganization(_Inbound):
    kind = schemas.fields.String(required=True)


class _InboundStandard(_Inbound):
    code = schemas.fields.String(required=True)
    status = schemas.fields.String(required=True)


class _InboundEquipment(_Inbound):
    standard_id = schemas.fields.String(required=True)
    due_on = schemas.fields.Date(allow_none=True)


class _InboundInstrument(_Inbound):
    organization_id = schemas.fields.String(required=True)
    due_on = schemas.fields.Date(allow_none=True)


_INBOUND_BY_ENTITY = {"organization": _InboundOrganization, "standard": _InboundStandard,
                      "equipment": _InboundEquipment, "instrument": _InboundInstrument}

# Consumers treat a payload failing these as poison (straight to the DLQ).
INVENTORY_SCHEMAS = {
    event_type: _INBOUND_BY_ENTITY[event_type.removeprefix(INVENTORY).split(".")[0]]()
    for event_type in INVENTORY_HANDLERS
}

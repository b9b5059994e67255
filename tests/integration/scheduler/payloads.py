"""Inventory event payloads as the inventory publishes them (its schemas dump its models), so the
scheduler's tests feed it exactly what it will receive."""

from __future__ import annotations

import datetime as dt
import uuid

from services.inventory import events as inventory_events
from services.inventory.models import Equipment, Instrument, Organization, Standard


def _version(entity, version: int):
    entity.version = version
    entity.created_at = entity.updated_at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return entity


def organization(*, id: str | None = None, version: int = 1, name: str = "示例企业", kind: str = "enterprise",
                 contacts: list | None = None, **fields) -> dict:
    entity = _version(Organization(id=id or str(uuid.uuid4()), name=name, kind=kind,
                                   contacts=contacts if contacts is not None else
                                   [{"name": "王工", "email": "wang@example.com", "locale": "zh-CN"}],
                                   industry_chains=[], alliance_member=True, **fields), version)
    return inventory_events.PAYLOADS["organization.registered"]().dump(entity)


def standard(*, id: str | None = None, version: int = 1, status: str = "in_service", bookable: bool = True,
             recovery_minutes: int = 0, certificate_expires_on: dt.date | None = dt.date(2029, 1, 1),
             equipment: list[dict] | None = None, custodian_email: str = "custodian@example.com",
             code: str | None = None, **fields) -> dict:
    """A standard's state. ``equipment``: dicts made by :func:`equipment` (with ``due_on`` dates)."""
    standard_id = id or str(uuid.uuid4())
    entity = _version(Standard(
        id=standard_id, code=code or f"STD-{standard_id[:8]}", name=fields.pop("name", "示例标准装置"),
        discipline="mechanical", measurand="pressure", status=status, bookable=bookable, public=True,
        recovery_minutes=recovery_minutes, certificate_number="示例-001",
        certificate_issued_on=(certificate_expires_on - dt.timedelta(days=4 * 365)) if certificate_expires_on else None,
        certificate_expires_on=certificate_expires_on, custodian_name="李工", custodian_email=custodian_email,
        industries=[], lab="压力实验室", **fields), version)
    entity.equipment = [
        _version(Equipment(id=e["id"], standard_id=standard_id, role=e.get("role", "main"), name=e["name"],
                           serial_number=e.get("serial_number"), calibration_interval_months=12,
                           due_on=dt.date.fromisoformat(e["due_on"]) if e.get("due_on") else None), e["version"])
        for e in (equipment or [])
    ]
    return inventory_events.PAYLOADS["standard.updated"]().dump(entity)


def equipment(*, standard_id: str, id: str | None = None, version: int = 1, due_on: dt.date | None = None,
              name: str = "活塞式压力计", serial_number: str = "SN-001") -> dict:
    entity = _version(Equipment(id=id or str(uuid.uuid4()), standard_id=standard_id, role="main", name=name,
                                serial_number=serial_number, calibration_interval_months=12, due_on=due_on), version)
    data = inventory_events.PAYLOADS["equipment.updated"]().dump(entity)
    return data


def instrument(*, organization_id: str, id: str | None = None, version: int = 1, due_on: dt.date,
               name: str = "一般压力表", serial_number: str | None = None, status: str = "active",
               regulation: str = "JJG 52-2013", category: str = "pressure gauge") -> dict:
    entity = _version(Instrument(
        id=id or str(uuid.uuid4()), organization_id=organization_id, name=name, category=category,
        serial_number=serial_number or f"P-{uuid.uuid4().hex[:6]}", regulation=regulation, mandatory=True,
        interval_months=6, registered_on=dt.date(2026, 1, 1), due_on=due_on, status=status), version)
    return inventory_events.PAYLOADS["instrument.updated"]().dump(entity)

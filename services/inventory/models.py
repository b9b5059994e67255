"""The inventory's tables. Derived values (usable, blocking reasons, states) come from domain.py."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, Boolean, Date, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

from services.inventory import domain
from shared.db import UTCDateTime
from shared.messaging.inbox import InboxMixin
from shared.messaging.outbox import OutboxMixin
from shared.timeutil import institute_today, utcnow


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime()}


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxMessage(InboxMixin, Base):
    pass


class Versioned:
    """Every entity carries a version: its ETag, and what lets read models ignore stale events."""

    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict:
        # SQLAlchemy bumps the version on every UPDATE and refuses a stale concurrent write.
        return {"version_id_col": cls.__table__.c.version}


class Organization(Versioned, Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    credit_code: Mapped[str | None] = mapped_column(String(18), unique=True)
    contacts: Mapped[list] = mapped_column(JSON, default=list)
    address: Mapped[str | None] = mapped_column(String(300))
    industry_chains: Mapped[list] = mapped_column(JSON, default=list)
    alliance_member: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiClient(Base):
    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organizations.id"))
    secret_hash: Mapped[str] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Standard(Versioned, Base):
    __tablename__ = "standards"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200))
    discipline: Mapped[str] = mapped_column(String(30), index=True)
    measurand: Mapped[str] = mapped_column(String(200))
    range_min: Mapped[float | None] = mapped_column(Float)
    range_max: Mapped[float | None] = mapped_column(Float)
    range_unit: Mapped[str | None] = mapped_column(String(60))
    uncertainty: Mapped[str | None] = mapped_column(String(200))
    accuracy_class: Mapped[str | None] = mapped_column(String(60))
    certificate_number: Mapped[str | None] = mapped_column(String(100))
    certificate_issued_on: Mapped[dt.date | None] = mapped_column(Date)
    certificate_expires_on: Mapped[dt.date | None] = mapped_column(Date)
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    bookable: Mapped[bool] = mapped_column(Boolean, default=True)
    lab: Mapped[str | None] = mapped_column(String(200))
    custodian_name: Mapped[str | None] = mapped_column(String(100))
    custodian_email: Mapped[str | None] = mapped_column(String(254))
    industries: Mapped[list] = mapped_column(JSON, default=list)
    recovery_minutes: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default="in_service", index=True)

    equipment: Mapped[list[Equipment]] = relationship(
        back_populates="standard", order_by="Equipment.created_at", lazy="selectin")

    @property
    def range(self) -> dict | None:
        if self.range_unit is None and self.range_min is None and self.range_max is None:
            return None
        return {"min": self.range_min, "max": self.range_max, "unit": self.range_unit}

    @property
    def assessment_certificate(self) -> dict | None:
        if self.certificate_issued_on is None and self.certificate_number is None:
            return None
        return {"number": self.certificate_number, "issued_on": self.certificate_issued_on,
                "expires_on": self.certificate_expires_on}

    @property
    def custodian(self) -> dict | None:
        if self.custodian_name is None and self.custodian_email is None:
            return None
        return {"name": self.custodian_name, "email": self.custodian_email}

    @property
    def blocking_reasons(self) -> list[str]:
        return domain.blocking_reasons(self.status, self.certificate_expires_on,
                                       [(e.id, e.due_on) for e in self.equipment], institute_today())

    @property
    def usable(self) -> bool:
        return domain.is_usable(self.blocking_reasons)


class StatusChange(Base):
    __tablename__ = "standard_status_changes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    standard_id: Mapped[str] = mapped_column(ForeignKey("standards.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Equipment(Versioned, Base):
    __tablename__ = "equipment"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    standard_id: Mapped[str] = mapped_column(ForeignKey("standards.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(100))
    serial_number: Mapped[str | None] = mapped_column(String(100))
    calibration_interval_months: Mapped[int | None] = mapped_column(Integer)
    last_calibrated_on: Mapped[dt.date | None] = mapped_column(Date)
    due_on: Mapped[dt.date | None] = mapped_column(Date, index=True)

    standard: Mapped[Standard] = relationship(back_populates="equipment")

    @property
    def state(self) -> str:
        return domain.equipment_state(self.due_on, institute_today())


class Calibration(Base):
    __tablename__ = "calibrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    equipment_id: Mapped[str] = mapped_column(ForeignKey("equipment.id"), index=True)
    calibrated_on: Mapped[dt.date] = mapped_column(Date)
    performed_by: Mapped[str | None] = mapped_column(String(200))
    certificate_number: Mapped[str | None] = mapped_column(String(100))
    result: Mapped[str] = mapped_column(String(10))
    as_found: Mapped[str | None] = mapped_column(Text)
    as_left: Mapped[str | None] = mapped_column(Text)
    uncertainty: Mapped[str | None] = mapped_column(String(200))
    valid_until: Mapped[dt.date | None] = mapped_column(Date)
    next_due_on: Mapped[dt.date | None] = mapped_column(Date)
    notes: Mapped[str | None] = mapped_column(Text)
    corrects_id: Mapped[str | None] = mapped_column(ForeignKey("calibrations.id"))
    recorded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Check(Base):
    __tablename__ = "standard_checks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    standard_id: Mapped[str] = mapped_column(ForeignKey("standards.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    performed_on: Mapped[dt.date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Float)
    limit: Mapped[float] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(60))
    passed: Mapped[bool] = mapped_column(Boolean)
    notes: Mapped[str | None] = mapped_column(Text)
    corrects_id: Mapped[str | None] = mapped_column(ForeignKey("standard_checks.id"))
    recorded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Instrument(Versioned, Base):
    __tablename__ = "instruments"
    __table_args__ = (UniqueConstraint("organization_id", "serial_number", "category",
                                       name="uq_instrument_org_serial_category"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100))
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(100))
    serial_number: Mapped[str] = mapped_column(String(100))
    regulation: Mapped[str | None] = mapped_column(String(100))
    mandatory: Mapped[bool] = mapped_column(Boolean, default=False)
    interval_months: Mapped[int] = mapped_column(Integer)
    last_verified_on: Mapped[dt.date | None] = mapped_column(Date)
    registered_on: Mapped[dt.date] = mapped_column(Date, default=institute_today)
    due_on: Mapped[dt.date] = mapped_column(Date, index=True)
    location: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), default="active")


class Verification(Base):
    __tablename__ = "verifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instrument_id: Mapped[str] = mapped_column(ForeignKey("instruments.id"), index=True)
    verified_on: Mapped[dt.date] = mapped_column(Date)
    result: Mapped[str] = mapped_column(String(10))
    certificate_number: Mapped[str | None] = mapped_column(String(100))
    standard_id: Mapped[str | None] = mapped_column(ForeignKey("standards.id"))
    next_due_on: Mapped[dt.date | None] = mapped_column(Date)
    notes: Mapped[str | None] = mapped_column(Text)
    corrects_id: Mapped[str | None] = mapped_column(ForeignKey("verifications.id"))
    recorded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

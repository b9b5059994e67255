"""The scheduler's tables: read models fed by inventory events, notice keys, policy, reservations."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime
from shared.messaging.inbox import InboxMixin
from shared.messaging.outbox import OutboxMixin
from shared.timeutil import utcnow

ITEM_KINDS = ("equipment", "assessment_certificate", "instrument")


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime()}


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxMessage(InboxMixin, Base):
    pass


class KnownOrganization(Base):
    """Read model of inventory organizations: whom a notice goes to."""

    __tablename__ = "known_organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    contacts: Mapped[list] = mapped_column(JSON, default=list)
    source_version: Mapped[int] = mapped_column(Integer)


class KnownStandard(Base):
    """Read model of inventory standards: what a booking needs to know about one."""

    __tablename__ = "known_standards"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    bookable: Mapped[bool] = mapped_column(Boolean, default=True)
    recovery_minutes: Mapped[int] = mapped_column(Integer, default=0)
    certificate_number: Mapped[str | None] = mapped_column(String(100))
    certificate_expires_on: Mapped[dt.date | None] = mapped_column(Date)
    custodian_name: Mapped[str | None] = mapped_column(String(100))
    custodian_email: Mapped[str | None] = mapped_column(String(254))
    lab: Mapped[str | None] = mapped_column(String(200))
    usable: Mapped[bool] = mapped_column(Boolean, default=True)
    blocking_reasons: Mapped[list] = mapped_column(JSON, default=list)
    source_version: Mapped[int] = mapped_column(Integer)


class TrackedItem(Base):
    """Every calibratable item with its due date (equipment, assessment certificates, instruments).

    ``source_version`` is the inventory entity's version: an older event never overwrites a newer state.
    """

    __tablename__ = "tracked_items"
    __table_args__ = (Index("ix_tracked_items_kind_due", "item_kind", "due_on"),)

    item_kind: Mapped[str] = mapped_column(String(30), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    serial_number: Mapped[str | None] = mapped_column(String(100))
    category: Mapped[str | None] = mapped_column(String(100))
    regulation: Mapped[str | None] = mapped_column(String(100))
    mandatory: Mapped[bool] = mapped_column(Boolean, default=False)
    standard_id: Mapped[str | None] = mapped_column(String(36), index=True)
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    custodian_name: Mapped[str | None] = mapped_column(String(100))
    custodian_email: Mapped[str | None] = mapped_column(String(254))
    # None: never calibrated/verified and no date to start from; treated as due now by the rules.
    due_on: Mapped[dt.date | None] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    source_version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class NoticeKey(Base):
    """One notice, ever, per (item, due date, lead): the sweep's idempotency key.

    ``lead`` is ``"<days>"`` before the due date (``"30"``, ``"0"``) or ``"overdue:<n>"`` for the n-th
    overdue reminder.
    """

    __tablename__ = "notice_keys"

    item_kind: Mapped[str] = mapped_column(String(30), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    due_on: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    lead: Mapped[str] = mapped_column(String(20), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(String(36), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SweepRun(Base):
    __tablename__ = "sweep_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    as_of: Mapped[dt.date] = mapped_column(Date, index=True)
    trigger: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column()
    items_scanned: Mapped[int] = mapped_column(Integer, default=0)
    notices_emitted: Mapped[int] = mapped_column(Integer, default=0)


class Policy(Base):
    """The notice policy (a single row, id 1)."""

    __tablename__ = "policy"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    settings: Mapped[dict] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Reservation(Base):
    """A booking or a blackout of a standard: both hold the standard's time.

    ``held_until`` = ``ends_at`` + the standard's recovery time (bookings), = ``ends_at`` (blackouts).
    On PostgreSQL an exclusion constraint refuses two active reservations of one standard whose
    half-open ``[starts_at, held_until)`` ranges overlap; on SQLite writers are serialised and the
    same check runs in the writing transaction.
    """

    __tablename__ = "reservations"
    __table_args__ = (
        ExcludeConstraint(
            ("standard_id", "="),
            (text("tstzrange(starts_at, held_until, '[)')"), "&&"),
            using="gist",
            name="reservations_no_overlap",
            where=text("status IN ('pending', 'confirmed')"),
        ).ddl_if(dialect="postgresql"),
        Index("ix_reservations_standard_time", "standard_id", "starts_at"),
        # The reminder job's work list: confirmed bookings not yet reminded, by start.
        Index("ix_reservations_reminder_due", "starts_at",
              postgresql_where=text("status = 'confirmed' AND reminder_sent_at IS NULL"),
              sqlite_where=text("status = 'confirmed' AND reminder_sent_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(10))  # booking | blackout
    standard_id: Mapped[str] = mapped_column(String(36))
    starts_at: Mapped[dt.datetime] = mapped_column()
    ends_at: Mapped[dt.datetime] = mapped_column()
    held_until: Mapped[dt.datetime] = mapped_column()
    status: Mapped[str] = mapped_column(String(10))  # pending | confirmed | rejected | cancelled
    purpose: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by_client: Mapped[str] = mapped_column(String(64))
    requested_by_org: Mapped[str | None] = mapped_column(String(36))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    reminder_sent_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

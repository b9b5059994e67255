"""The notifier's tables: recipients (read model), preferences, webhook endpoints, notifications and
every delivery attempt."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import UTCDateTime
from shared.messaging.inbox import InboxMixin
from shared.messaging.outbox import OutboxMixin
from shared.timeutil import utcnow

CHANNELS = ("email", "webhook")
STATUSES = ("pending", "sent", "failed", "dead")


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime()}


class OutboxMessage(OutboxMixin, Base):
    pass


class InboxMessage(InboxMixin, Base):
    pass


class KnownOrganization(Base):
    """Read model of inventory organizations: names, contacts and their languages."""

    __tablename__ = "known_organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    contacts: Mapped[list] = mapped_column(JSON, default=list)
    source_version: Mapped[int] = mapped_column(Integer)


class Preferences(Base):
    """An organization's notice preferences; defaults apply while none are stored."""

    __tablename__ = "preferences"

    organization_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    locale: Mapped[str] = mapped_column(String(10), default="zh-CN")
    email: Mapped[bool] = mapped_column(Boolean, default=True)
    webhook: Mapped[bool] = mapped_column(Boolean, default=True)
    muted_event_types: Mapped[list] = mapped_column(JSON, default=list)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookEndpoint(Base):
    """A partner's (or an admin's) receiver of signed CloudEvents."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list] = mapped_column(JSON)
    # The signing secret must be readable to sign deliveries (Standard Webhooks uses HMAC).
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Notification(Base):
    """One notice to one recipient on one channel. Recorded before it is sent, marked after."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", "recipient", name="uq_notification_event_channel_recipient"),
        Index("ix_notifications_due", "channel", "status", "next_attempt_at"),
        # The delivery log lists newest first (GET /notifications): without it, a sort of every row.
        Index("ix_notifications_created", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(200), index=True)
    event: Mapped[dict] = mapped_column(JSON)  # the CloudEvent: everything a notice is made from
    channel: Mapped[str] = mapped_column(String(10))
    recipient: Mapped[str] = mapped_column(String(2000))  # an email address, or the webhook endpoint id
    recipient_name: Mapped[str | None] = mapped_column(String(200))
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)
    endpoint_id: Mapped[str | None] = mapped_column(ForeignKey("webhook_endpoints.id"))
    subject: Mapped[str | None] = mapped_column(String(500))
    locale: Mapped[str | None] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # A dispatcher that claimed the row for sending; another may take it over after this instant.
    claimed_until: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column()

    attempts_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="notification", order_by="DeliveryAttempt.attempted_at", lazy="selectin")


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    notification_id: Mapped[str] = mapped_column(ForeignKey("notifications.id"), index=True)
    attempted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(10))  # sent | failed
    error: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)

    notification: Mapped[Notification] = relationship(back_populates="attempts_log")

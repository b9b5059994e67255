"""Representations of the notifier's resources and the payloads of the events it publishes."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from services.notifier.models import CHANNELS, STATUSES
from shared.schemas import JsonBoolean

LOCALES = ("zh-CN", "en")


class Schema(ma.Schema):
    pass


class DeliveryAttemptSchema(Schema):
    attempted_at = fields.AwareDateTime(format="iso")
    outcome = fields.String()
    error = fields.String(allow_none=True)
    status_code = fields.Integer(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)


class NotificationSchema(Schema):
    id = fields.String()
    event_id = fields.String()
    event_type = fields.String()
    channel = fields.String(metadata={"description": "email | webhook"})
    recipient = fields.String(metadata={"description": "Email address, or the webhook endpoint id"})
    recipient_name = fields.String(allow_none=True)
    organization_id = fields.String(allow_none=True)
    subject = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "pending | sent | failed (will retry) | dead (gave up)"})
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.AwareDateTime(format="iso", allow_none=True)
    created_at = fields.AwareDateTime(format="iso")
    sent_at = fields.AwareDateTime(format="iso", allow_none=True)


class NotificationDetailSchema(NotificationSchema):
    delivery_attempts = fields.List(fields.Nested(DeliveryAttemptSchema), attribute="attempts_log")


class NotificationQuerySchema(Schema):
    organization_id = fields.String(validate=validate.Length(max=36))
    status = fields.String(validate=validate.OneOf(STATUSES))
    event_type = fields.String(validate=validate.Length(max=200))
    channel = fields.String(validate=validate.OneOf(CHANNELS))


class WebhookCreateSchema(Schema):
    organization_id = fields.String(allow_none=True, validate=validate.Length(max=36), metadata={
        "description": "Whose events the endpoint receives; a partner's own by default. Admin: null = all."})
    url = fields.Url(required=True, schemes={"https", "http"}, require_tld=False,
                     validate=validate.Length(max=2000))
    event_types = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)), required=True,
        validate=validate.Length(min=1, max=50),
        metadata={"description": "Event types or patterns, e.g. refstd.scheduler.booking.* (topic syntax: * #)"})


class WebhookSchema(Schema):
    id = fields.String()
    organization_id = fields.String(allow_none=True)
    url = fields.String()
    event_types = fields.List(fields.String())
    active = fields.Boolean()
    created_by = fields.String()
    created_at = fields.AwareDateTime(format="iso")


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(metadata={"description": "whsec_ + base64; shown once"})


class PreferencesSchema(Schema):
    organization_id = fields.String(dump_only=True)
    locale = fields.String(load_default="zh-CN", validate=validate.OneOf(LOCALES))
    email = JsonBoolean(load_default=True)
    webhook = JsonBoolean(load_default=True)
    muted_event_types = fields.List(fields.String(validate=validate.Length(min=1, max=200)), load_default=list,
                                    validate=validate.Length(max=100))
    version = fields.Integer(dump_only=True)


class NotificationEventSchema(NotificationSchema):
    """Payload of refstd.notifier.notification.sent / notification.failed."""

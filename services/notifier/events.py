"""Events of the notifier: the handlers of what it consumes, the schemas it checks them with, and the
events it publishes (``notification.sent`` / ``notification.failed``, through its outbox).

- ``refstd.inventory.organization.registered|updated`` keep the read model of organizations
  (:class:`KnownOrganization`) current; an older version than the one held is ignored, so replays
  and reordering are harmless.
- every scheduler event the notifier notifies of becomes notification rows (status ``pending``, due
  now), one per channel and recipient as :func:`services.notifier.domain.plan_notifications` says.
  The rows are inserted with ON CONFLICT DO NOTHING on (event id, channel, recipient), so an event
  delivered twice creates nothing twice even past the inbox. The dispatchers send them later
  (:mod:`services.notifier.delivery`): recording first and sending after keeps a redelivered event
  from sending anything again.
"""

from __future__ import annotations

import logging

import marshmallow as ma
from marshmallow import fields, validate
from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.notifier import domain
from services.notifier.models import (
    KnownOrganization,
    Notification,
    OutboxMessage,
    Preferences,
    WebhookEndpoint,
    new_id,
)
from services.notifier.schemas import NotificationEventSchema
from services.topology import NOTIFIER_EVENTS
from shared.messaging.outbox import Outbox
from shared.timeutil import utcnow

log = logging.getLogger(__name__)

SOURCE = "/services/notifier"
PREFIX = "refstd.notifier."
SENT = PREFIX + "notification.sent"
FAILED = PREFIX + "notification.failed"

#: The queue the notifier's consumer reads (refstd.scheduler.# and refstd.inventory.organization.*).
QUEUE = NOTIFIER_EVENTS
#: The consumer's name (its inbox rows and its connection).
CONSUMER = "notifier.events"

outbox = Outbox(OutboxMessage, SOURCE)
_EVENT_SCHEMA = NotificationEventSchema()


# -- outbound ------------------------------------------------------------------------------------

def publish(session: Session, event_type: str, notification: Notification) -> dict:
    """Record ``notification.sent`` / ``notification.failed`` in the outbox, in the caller's transaction;
    the event carries the correlation id of the event that caused the notification."""
    correlation = (notification.event or {}).get("correlationid") or notification.event_id
    return outbox.add(session, event_type, notification.id, _EVENT_SCHEMA.dump(notification),
                      correlation_id=correlation)


# -- inbound: the read model of organizations ----------------------------------------------------

def on_organization(session: Session, event: dict) -> None:
    data = event["data"]
    organization = session.get(KnownOrganization, data["id"])
    if organization is not None and data["version"] <= organization.source_version:
        return  # an older or the same state: a replay or an event overtaken by a newer one
    if organization is None:
        organization = KnownOrganization(id=data["id"], source_version=data["version"])
        session.add(organization)
    organization.name = data["name"]
    organization.name_en = data.get("name_en")
    organization.kind = data["kind"]
    organization.contacts = [dict(contact) for contact in data.get("contacts") or []]
    organization.source_version = data["version"]


# -- inbound: scheduler events -> notifications --------------------------------------------------

def preferences_of(session: Session, organization_id: str | None) -> domain.OrganizationPreferences:
    """The organization's stored preferences, else the defaults."""
    stored = session.get(Preferences, organization_id) if organization_id else None
    if stored is None:
        return domain.DEFAULT_PREFERENCES
    return domain.OrganizationPreferences(locale=stored.locale, email=stored.email, webhook=stored.webhook,
                                          muted_event_types=tuple(stored.muted_event_types or ()))


def candidate_endpoints(session: Session, organization_id: str | None) -> list[domain.Endpoint]:
    """Active endpoints of the organization and every admin endpoint (no organization)."""
    owner = WebhookEndpoint.organization_id.is_(None)
    if organization_id is not None:
        owner = or_(owner, WebhookEndpoint.organization_id == organization_id)
    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.organization_id, WebhookEndpoint.event_types)
        .where(WebhookEndpoint.active.is_(True), owner)
    )
    return [domain.Endpoint(row.id, row.organization_id, tuple(row.event_types or ())) for row in rows]


def subject_for(event: dict, locale: str | None, role: str | None = None) -> str | None:
    """The email subject the email channel will use (so the delivery log shows it before sending), when
    its renderer is installed; None otherwise.

    A template that cannot render this event fails the delivery later, where it is logged and retried;
    here it just leaves the subject empty.
    """
    try:
        from services.notifier import rendering
    except ImportError:
        return None
    try:
        if hasattr(rendering, "subject_for"):
            return rendering.subject_for(event, locale, role=role)
        return rendering.render_email(event, locale, role=role).subject
    except Exception:  # noqa: BLE001 - the sender reports the same failure with its attempt
        log.warning("could not render the subject of %s (%s) in %s", event.get("id"), event.get("type"), locale,
                    exc_info=True)
        return None


def on_scheduler_event(session: Session, event: dict) -> None:
    """Record one pending notification per channel and recipient the event calls for."""
    organization_id = domain.event_organization(event)
    fallback_contacts = None
    if organization_id is not None and domain.lacks_organization_contacts(event):
        known = session.get(KnownOrganization, organization_id)
        fallback_contacts = known.contacts if known is not None else None
    planned = domain.plan_notifications(
        event, preferences_of(session, organization_id), candidate_endpoints(session, organization_id),
        organization_contacts=fallback_contacts,
    )
    if not planned:
        log.info("event %s (%s): nobody to notify", event["id"], event["type"])
        return
    now = utcnow()
    subjects: dict[tuple, str | None] = {}
    rows = []
    for item in planned:
        subject = None
        if item.channel == "email":
            key = (item.locale, domain.recipient_role(event, item.recipient))
            if key not in subjects:
                subjects[key] = subject_for(event, *key)
            subject = subjects[key]
        rows.append({
            "id": new_id(), "event_id": event["id"], "event_type": event["type"], "event": event,
            "channel": item.channel, "recipient": item.recipient, "recipient_name": _cut(item.recipient_name, 200),
            "organization_id": item.organization_id, "endpoint_id": item.endpoint_id,
            "subject": _cut(subject, 500), "locale": item.locale, "status": "pending", "attempts": 0,
            "next_attempt_at": now, "created_at": now,
        })
    insert_new(session, rows)


def insert_new(session: Session, rows: list[dict]) -> int:
    """INSERT the notification rows, skipping any (event, channel, recipient) already recorded; returns
    how many were new."""
    dialect = session.get_bind().dialect.name
    statement = _INSERT_NEW.get(dialect)
    if statement is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # One statement object per dialect, executed with a list of rows: compiled once and cached.
        statement = _INSERT_NEW[dialect] = (
            insert(Notification.__table__)
            .on_conflict_do_nothing(index_elements=["event_id", "channel", "recipient"])
            .returning(Notification.__table__.c.id))
    return len(session.execute(statement, rows).all())


_INSERT_NEW: dict = {}


def _cut(text: str | None, length: int) -> str | None:
    return text[:length] if isinstance(text, str) else None


# -- the handler table and the payloads the consumer checks --------------------------------------

HANDLERS = {
    **{event_type: on_organization for event_type in domain.READ_MODEL_TYPES},
    **{event_type: on_scheduler_event for event_type in domain.NOTIFIABLE_TYPES},
}


def handler_for(event_type: str):
    """The handler of an event type (``handler(session, event)``), or None if the notifier ignores it."""
    return HANDLERS.get(event_type)


_ID = validate.Length(min=1, max=36)


class _Inbound(ma.Schema):
    """The part of a payload this service relies on; the rest passes through unchecked."""

    class Meta:
        unknown = ma.INCLUDE


class _Contact(_Inbound):
    name = fields.String(allow_none=True)
    email = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)


class _Recipient(_Inbound):
    kind = fields.String(required=True, validate=validate.OneOf(domain.RECIPIENT_KINDS))
    organization_id = fields.String(allow_none=True, validate=_ID)
    name = fields.String(allow_none=True)
    contacts = fields.List(fields.Nested(_Contact), required=True)


class _Notice(_Inbound):
    recipient = fields.Nested(_Recipient, required=True)
    organization_id = fields.String(allow_none=True, validate=_ID)
    items = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))


class _Requester(_Inbound):
    organization_id = fields.String(allow_none=True, validate=_ID)
    contacts = fields.List(fields.Nested(_Contact), load_default=list)


class _RequestedBy(_Inbound):
    organization_id = fields.String(allow_none=True, validate=_ID)


class _Booking(_Inbound):
    id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    status = fields.String(required=True, validate=validate.OneOf(("pending", "confirmed", "rejected", "cancelled")))
    requested_by = fields.Nested(_RequestedBy, allow_none=True)
    requester = fields.Nested(_Requester, allow_none=True)
    custodian_email = fields.String(allow_none=True)


class _Organization(_Inbound):
    id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    version = fields.Integer(required=True, strict=True)
    name = fields.String(required=True, validate=validate.Length(max=200))
    name_en = fields.String(allow_none=True, validate=validate.Length(max=200))
    kind = fields.String(required=True, validate=validate.Length(max=20))
    contacts = fields.List(fields.Nested(_Contact), load_default=list)


#: What the consumer validates each payload against; a payload failing it is poison (to the DLQ).
NOTIFIER_SCHEMAS = {
    **{event_type: _Organization() for event_type in domain.READ_MODEL_TYPES},
    **{event_type: _Notice() for event_type in domain.NOTICE_TYPES},
    **{event_type: _Booking() for event_type in domain.BOOKING_TYPES},
}

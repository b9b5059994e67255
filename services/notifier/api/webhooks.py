"""Webhook endpoints: partners and admins register receivers of signed CloudEvents."""

from __future__ import annotations

import uuid

from flask import url_for
from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import false, func, select
from sqlalchemy.orm import Session

from services.notifier import domain, schemas
from services.notifier.models import Notification, WebhookEndpoint
from services.notifier.webhooks import (
    PING_EVENT_TYPE,
    check_url,
    new_secret,
    pattern_problem,
    private_addresses_allowed,
)
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, not_found, validation_error
from shared.messaging.envelope import make_event
from shared.web import Blueprint, db_session, settings

blp = Blueprint(
    "webhooks", __name__, url_prefix="/api/v1",
    description="""Receivers of signed CloudEvents (Standard Webhooks).

**Who.** Admin clients manage every endpoint; a partner client manages its own organization's endpoints
only (another organization's is 404, so ids cannot be probed). Other roles get 403.

**Deliveries.** Each delivery is an HTTP POST of the CloudEvent JSON (`Content-Type:
application/cloudevents+json`), with the headers `webhook-id` (the CloudEvent `id`, the same on every
retry: deduplicate by it), `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64
HMAC-SHA256>`), so any Standard Webhooks library verifies it with the endpoint's secret, e.g.
`standardwebhooks.Webhook(secret).verify(body, headers)`. Answer 2xx to acknowledge. Any other status, a
timeout (3 s to connect, 10 s for the answer) or a connection failure is retried with exponential
backoff and jitter, then the notification is `dead`; 410 Gone stops at once. Redirects are not followed.

**Secret.** `whsec_` + base64 of 32 random bytes, returned once, by the registration. Standard Webhooks
signs with HMAC, a shared-secret scheme, so the notifier keeps the secret to sign every delivery; it is
never shown again (lost: delete the endpoint and register a new one).

**URLs.** `http` or `https`, no `user:password@`. The host must resolve, and only to public addresses:
loopback, private (RFC 1918, fc00::/7), link-local (169.254.0.0/16 with the cloud metadata address,
fe80::/10), CGNAT, reserved, multicast and unspecified addresses are refused with a 422 naming `url`
(unless the service runs with `WEBHOOK_ALLOW_PRIVATE=true`). The check is repeated before every
delivery, which connects only to the addresses it approved.""",
)

ROLES = ("admin", "partner")
ENDPOINT = "webhook endpoint"


class WebhookQuerySchema(schemas.Schema):
    organization_id = fields.String(validate=validate.Length(max=36),
                                    metadata={"description": "Only this organization's endpoints (admin)"})


class PingResultSchema(schemas.Schema):
    notification_id = fields.String(metadata={"description": "The ping's notification in the delivery log"})


def _valid_id(value: str) -> bool:
    """Ids are canonical UUID strings; anything else names nothing (and never reaches the database)."""
    try:
        return str(uuid.UUID(value)) == value.lower()
    except (ValueError, TypeError, AttributeError):
        return False


def _visible_endpoint(session: Session, principal: Principal, webhook_id: str) -> WebhookEndpoint:
    """The active endpoint if this caller may see it; 404 otherwise (also for another organization's)."""
    endpoint = session.get(WebhookEndpoint, webhook_id) if _valid_id(webhook_id) else None
    if endpoint is None or not endpoint.active:
        not_found(ENDPOINT)
    if principal.role != "admin" and (principal.organization_id is None
                                      or endpoint.organization_id != principal.organization_id):
        not_found(ENDPOINT)
    return endpoint


def _owner(principal: Principal, data: dict) -> str | None:
    """Whose events the endpoint receives: any organization (or null: all) for an admin, else the partner's."""
    requested = data.get("organization_id")
    if principal.role == "admin":
        if requested is not None and not _valid_id(requested):
            validation_error({"organization_id": "must be an organization id (a UUID) or null"})
        return requested
    if principal.organization_id is None:
        raise Problem(403, "This partner client belongs to no organization, so it cannot register webhooks.")
    if requested is not None and requested != principal.organization_id:
        not_found("organization")
    return principal.organization_id


def _pattern_problem(pattern: str) -> str | None:
    problem = pattern_problem(pattern)
    if problem is None and not any(domain.type_matches(pattern, event_type)
                                   for event_type in domain.NOTIFIABLE_TYPES):
        problem = ("matches none of the event types delivered to webhooks: "
                   + ", ".join(domain.NOTIFIABLE_TYPES))
    return problem


def _event_types(patterns: list[str]) -> list[str]:
    errors = {f"event_types.{index}": problem for index, pattern in enumerate(patterns)
              if (problem := _pattern_problem(pattern))}
    if errors:
        validation_error(errors)
    return list(dict.fromkeys(patterns))


def _location(endpoint: WebhookEndpoint) -> str:
    return url_for("webhooks.WebhookItem", webhook_id=endpoint.id)


@blp.route("/webhooks")
class Webhooks(MethodView):
    @require(*ROLES)
    @blp.arguments(WebhookQuerySchema, location="query")
    @blp.response(200, schemas.WebhookSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List webhook endpoints (admin: all; partner: its organization's)

        Deleted endpoints are not listed. Oldest first. The secret is never shown here.
        """
        principal = current_principal()
        conditions = [WebhookEndpoint.active.is_(True)]
        if principal.role != "admin":
            # A partner naming no organization owns no endpoint: "== None" would list the institute's
            # endpoints, which receive every organization's events.
            conditions.append(false() if principal.organization_id is None
                              else WebhookEndpoint.organization_id == principal.organization_id)
        if "organization_id" in args:
            conditions.append(WebhookEndpoint.organization_id == args["organization_id"])
        session = db_session()
        pagination_parameters.item_count = session.scalar(
            select(func.count()).select_from(WebhookEndpoint).where(*conditions))
        if pagination_parameters.first_item >= pagination_parameters.item_count:
            return []
        query = (select(WebhookEndpoint).where(*conditions)
                 .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
                 .offset(pagination_parameters.first_item).limit(pagination_parameters.page_size))
        return session.scalars(query).all()

    @require(*ROLES)
    @blp.arguments(schemas.WebhookCreateSchema)
    @blp.response(201, schemas.WebhookCreatedSchema, headers={"Location": {"schema": {"type": "string"}}})
    def post(self, data):
        """Register a webhook endpoint (admin, partner); the answer holds the signing secret, shown once

        `organization_id`: whose events the endpoint receives. A partner's endpoint always receives its
        own organization's (the default; naming another organization is 404). An admin may name any
        organization, or null (the default for an admin) to receive every matching event.
        `event_types`: event types or topic patterns, `refstd.<service>.<entity>.<verb>` with `*` (one
        word) and `#` (any number of words) as whole words, e.g. `refstd.scheduler.booking.*`; each must
        match at least one of the event types the notifier delivers (the scheduler's notices and booking
        events), else 422 naming it (`event_types.<index>`).
        The URL is checked against the SSRF rules (422 naming `url` with the reason).
        """
        principal = current_principal()
        organization_id = _owner(principal, data)
        event_types = _event_types(data["event_types"])
        check = check_url(data["url"], private_addresses_allowed(settings()))
        if check.problem:
            validation_error({"url": check.problem})
        session = db_session()
        endpoint = WebhookEndpoint(organization_id=organization_id, url=data["url"], event_types=event_types,
                                   secret=new_secret(), active=True, created_by=principal.client_id)
        session.add(endpoint)
        session.commit()
        return endpoint, 201, {"Location": _location(endpoint), "Cache-Control": "no-store"}


@blp.route("/webhooks/<webhook_id>")
class WebhookItem(MethodView):
    @require(*ROLES)
    @blp.response(200, schemas.WebhookSchema)
    def get(self, webhook_id):
        """One webhook endpoint (partner: its organization's only; the secret is not shown)"""
        return _visible_endpoint(db_session(), current_principal(), webhook_id)

    @require(*ROLES)
    @blp.response(204)
    def delete(self, webhook_id):
        """Delete a webhook endpoint: no more deliveries

        The endpoint is deactivated rather than erased, so the delivery log keeps naming it; it is no
        longer listed or found (404), and its pending deliveries end as `dead` ("endpoint deleted").
        """
        session = db_session()
        endpoint = _visible_endpoint(session, current_principal(), webhook_id)
        endpoint.active = False
        session.commit()


@blp.route("/webhooks/<webhook_id>/ping")
class WebhookPing(MethodView):
    @require(*ROLES)
    @blp.response(202, PingResultSchema)
    def post(self, webhook_id):
        """Send a test event to the endpoint

        Queues a `refstd.notifier.webhook.ping` CloudEvent for this endpoint; it is delivered, signed,
        logged and retried like any other notification (see `GET /notifications/{notification_id}`).
        """
        principal = current_principal()
        session = db_session()
        endpoint = _visible_endpoint(session, principal, webhook_id)
        event = make_event(PING_EVENT_TYPE, "/services/notifier", endpoint.id,
                           {"endpoint_id": endpoint.id, "organization_id": endpoint.organization_id,
                            "url": endpoint.url, "requested_by": principal.client_id})
        notification = Notification(
            event_id=event["id"], event_type=PING_EVENT_TYPE, event=event, channel="webhook",
            recipient=endpoint.id, recipient_name=endpoint.url[:200], organization_id=endpoint.organization_id,
            endpoint_id=endpoint.id, subject="Webhook ping", status="pending", attempts=0)
        session.add(notification)
        session.commit()
        return {"notification_id": notification.id}

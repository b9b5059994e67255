"""The delivery log: every notification, its attempts, and a manual retry."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from marshmallow import fields, validate
from sqlalchemy import false, func, select
from sqlalchemy.orm import Session

from services.notifier import delivery
from services.notifier.models import Notification
from services.notifier.schemas import NotificationDetailSchema, NotificationQuerySchema, NotificationSchema
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, ProblemSchema, not_found
from shared.web import Blueprint, db_session

blp = Blueprint(
    "notifications", __name__, url_prefix="/api/v1",
    description="Every notification the notifier recorded (one per event, channel and recipient), with each "
                "delivery attempt. Admin and lab staff see all of them; an enterprise or partner client sees "
                "only its own organization's (anything else is 404). `organization_id` is whose notification "
                "it is: the organization whose contacts or webhook endpoint it goes to; the institute's own "
                "(custodians, admin endpoints) have none.",
)

STAFF = ("admin", "lab_staff")
_PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}
_NO_NUL = validate.Regexp(r"\A[^\x00]*\Z", error="must not contain NUL characters")


class NotificationListQuerySchema(NotificationQuerySchema):
    organization_id = fields.String(validate=[validate.Length(max=36), _NO_NUL])
    event_type = fields.String(
        validate=[validate.Length(max=200), _NO_NUL],
        metadata={"description": "The full event type, e.g. refstd.scheduler.booking.confirmed"})


def canonical_id(value: Any) -> str | None:
    """The id in its stored form, or None when ``value`` cannot be an id (so it names nothing)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def visible_to(principal: Principal):
    """The SQL condition on notifications this caller may see."""
    if principal.is_staff:
        return None
    if principal.organization_id is None:
        return false()
    return Notification.organization_id == principal.organization_id


def notification_or_404(session: Session, notification_id: str, principal: Principal, *,
                        lock: bool = False) -> Notification:
    canonical = canonical_id(notification_id)
    if canonical is None:
        not_found("notification")
    query = select(Notification).where(Notification.id == canonical)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    notification = session.scalar(query)
    if notification is None or (not principal.is_staff and (
            principal.organization_id is None or notification.organization_id != principal.organization_id)):
        not_found("notification")
    return notification


def _empty_page(pagination_parameters, count: int) -> bool:
    pagination_parameters.item_count = count
    # Also keeps absurd page numbers away from the database (an OFFSET beyond its integer range).
    return pagination_parameters.first_item >= count


@blp.route("/notifications")
class Notifications(MethodView):
    @require()
    @blp.arguments(NotificationListQuerySchema, location="query")
    @blp.response(200, NotificationSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List notifications, newest first

        Filters: `organization_id`, `status` (pending | sent | failed | dead), `event_type`, `channel`
        (email | webhook). An enterprise or partner client sees only its own organization's
        notifications (naming another organization_id gives an empty list).
        """
        principal = current_principal()
        session = db_session()
        conditions = []
        scope = visible_to(principal)
        if scope is not None:
            conditions.append(scope)
        if "organization_id" in args:
            wanted = canonical_id(args["organization_id"])
            conditions.append(Notification.organization_id == wanted if wanted is not None else false())
        for name in ("status", "event_type", "channel"):
            if name in args:
                conditions.append(getattr(Notification, name) == args[name])
        count = session.scalar(select(func.count()).select_from(Notification).where(*conditions))
        if _empty_page(pagination_parameters, count):
            return []
        return session.scalars(
            select(Notification).where(*conditions)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .offset(pagination_parameters.first_item).limit(pagination_parameters.page_size)
        ).all()


@blp.route("/notifications/<notification_id>")
class NotificationItem(MethodView):
    @require()
    @blp.response(200, NotificationDetailSchema)
    @blp.alt_response(404, description="No such notification (or another organization's).", **_PROBLEM)
    def get(self, notification_id):
        """One notification with every delivery attempt (oldest first)"""
        return notification_or_404(db_session(), notification_id, current_principal())


@blp.route("/notifications/<notification_id>/retry")
class NotificationRetry(MethodView):
    @require(*STAFF)
    @blp.response(200, NotificationSchema)
    @blp.alt_response(404, description="No such notification.", **_PROBLEM)
    @blp.alt_response(409, description="`code: already_sent`: the notification was delivered; it is never "
                                       "sent twice.", **_PROBLEM)
    def post(self, notification_id):
        """Send a failed or dead notification again now

        The notification becomes `pending`, due now; the dispatcher makes one more attempt (the attempt
        count goes on, so a dead notification that fails again is dead again). Admin and lab staff only.
        """
        session = db_session()
        notification = notification_or_404(session, notification_id, current_principal(), lock=True)
        try:
            delivery.retry(session, notification)
        except delivery.AlreadySent:
            raise Problem(409, "The notification was sent; it is never sent twice.", code="already_sent",
                          notification_id=notification.id, sent_at=notification.sent_at.isoformat()
                          if notification.sent_at else None) from None
        session.commit()
        return notification

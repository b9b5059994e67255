"""An organization's notice preferences: language, channels, muted event types."""

from __future__ import annotations

import re

from flask.views import MethodView
from marshmallow import ValidationError, validates
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notifier import domain
from services.notifier.api.notifications import canonical_id
from services.notifier.models import KnownOrganization, Preferences
from services.notifier.schemas import PreferencesSchema
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, ProblemSchema, not_found
from shared.web import Blueprint, check_if_match, db_session, etag_of

blp = Blueprint(
    "preferences", __name__, url_prefix="/api/v1",
    description="How an organization is told: `locale` (zh-CN | en) for contacts without a language of their "
                "own (a contact's own `locale` wins), `email` and `webhook` switch its channels off, "
                "`muted_event_types` (event types or topic patterns, e.g. `refstd.scheduler.booking.*`) "
                "silence events. They apply to the organization's own contacts and webhook endpoints only: "
                "the institute's custodians and admin endpoints are told regardless. Admin and lab staff "
                "manage every organization's; an enterprise or partner client only its own (any other is 404). "
                "An organization the notifier has not heard of from the inventory is 404.",
)

_PROBLEM = {"schema": ProblemSchema, "content_type": "application/problem+json"}
_ETAG = {"ETag": {"schema": {"type": "string"}}}
_PATTERN = re.compile(r"\A(?:[A-Za-z0-9_:\-]+|\*|#)(?:\.(?:[A-Za-z0-9_:\-]+|\*|#))*\Z")
#: The version of an organization's preferences while none are stored (the defaults).
DEFAULT_VERSION = 0


class PreferencesInputSchema(PreferencesSchema):
    """PUT body: the whole preferences; a field left out takes its default."""

    @validates("muted_event_types")
    def _known_types(self, value: list[str], **_kwargs) -> None:
        for entry in value:
            if not _PATTERN.match(entry):
                raise ValidationError(f"{entry!r} is not an event type or a topic pattern (words separated by "
                                      "dots; * is one word, # zero or more).")
            if not any(domain.type_matches(entry, event_type) for event_type in domain.NOTIFIABLE_TYPES):
                raise ValidationError(f"{entry!r} matches no event the notifier sends notices for: "
                                      f"{', '.join(domain.NOTIFIABLE_TYPES)}.")


def _representation(organization_id: str, stored: Preferences | None) -> dict:
    if stored is None:
        defaults = domain.DEFAULT_PREFERENCES
        return {"organization_id": organization_id, "locale": defaults.locale, "email": defaults.email,
                "webhook": defaults.webhook, "muted_event_types": list(defaults.muted_event_types),
                "version": DEFAULT_VERSION}
    return {"organization_id": organization_id, "locale": stored.locale, "email": stored.email,
            "webhook": stored.webhook, "muted_event_types": list(stored.muted_event_types or []),
            "version": stored.version}


def _organization_or_404(session: Session, principal: Principal, organization_id: str) -> str:
    """The organization's id if this caller may see it and the notifier knows it; 404 otherwise."""
    canonical = canonical_id(organization_id)
    if canonical is None:
        not_found("organization")
    if not principal.is_staff and canonical != principal.organization_id:
        not_found("organization")
    if session.get(KnownOrganization, canonical) is None:
        not_found("organization")
    return canonical


def _stored(session: Session, organization_id: str, *, lock: bool = False) -> Preferences | None:
    query = select(Preferences).where(Preferences.organization_id == organization_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalar(query)


@blp.route("/organizations/<organization_id>/preferences")
class OrganizationPreferences(MethodView):
    @require()
    @blp.response(200, PreferencesSchema, headers=_ETAG)
    @blp.alt_response(404, description="No such organization (or another organization's).", **_PROBLEM)
    def get(self, organization_id):
        """An organization's preferences (the defaults while it has stored none, version 0)"""
        session = db_session()
        canonical = _organization_or_404(session, current_principal(), organization_id)
        body = _representation(canonical, _stored(session, canonical))
        return body, 200, {"ETag": etag_of(body["version"])}

    @require()
    @blp.arguments(PreferencesInputSchema)
    @blp.response(200, PreferencesSchema, headers=_ETAG)
    @blp.alt_response(404, description="No such organization (or another organization's).", **_PROBLEM)
    @blp.alt_response(409, description="`code: concurrent_update`: changed by someone else at the same time.",
                      **_PROBLEM)
    @blp.alt_response(412, description="If-Match names another version than the current one.", **_PROBLEM)
    def put(self, data, organization_id):
        """Replace an organization's preferences

        The whole document: a field left out takes its default. Honours `If-Match` (the ETag of GET;
        `"0"` while the defaults apply). Muted entries must match at least one event type the notifier
        sends notices for, so that a typo does not silently mute nothing.
        """
        session = db_session()
        canonical = _organization_or_404(session, current_principal(), organization_id)
        stored = _stored(session, canonical, lock=True)
        check_if_match(stored.version if stored is not None else DEFAULT_VERSION)
        muted = list(dict.fromkeys(data["muted_event_types"]))  # without repeats, in the order given
        if stored is None:
            stored = Preferences(organization_id=canonical, version=1)
            session.add(stored)
        else:
            stored.version += 1
        stored.locale = data["locale"]
        stored.email = data["email"]
        stored.webhook = data["webhook"]
        stored.muted_event_types = muted
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise Problem(409, "The preferences were changed by someone else at the same time; read them and "
                               "retry.", code="concurrent_update") from None
        body = _representation(canonical, stored)
        return body, 200, {"ETag": etag_of(body["version"])}

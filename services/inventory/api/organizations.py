"""Organizations: the enterprises, partner universities, institutes and government bodies."""

from __future__ import annotations

from flask import url_for
from flask.views import MethodView
from marshmallow import validate
from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from services.inventory import domain, events, schemas
from services.inventory.models import Organization
from shared.auth import Principal, current_principal, require
from shared.errors import Problem, not_found, validation_error
from shared.web import (
    Blueprint,
    check_if_match,
    commit_or_409,
    db_session,
    etag_of,
    flush_or_409,
    get_or_404,
    paginate_query,
)

blp = Blueprint(
    "organizations", __name__, url_prefix="/api/v1",
    description="Enterprises, partner universities, institutes and government bodies. Admin and lab staff "
                "manage every organization; an enterprise or partner client sees only its own organization "
                "(any other is 404) and may change only its `contacts`, `address` and `name_en`.",
)

STAFF = ("admin", "lab_staff")
# Roles that are confined to their own organization.
OWN_ORGANIZATION_ONLY = ("enterprise", "partner")
# What an enterprise or partner client may change on its own organization's record.
SELF_SERVICE_FIELDS = ("contacts", "address", "name_en")


class OrganizationPatchSchema(schemas.OrganizationSchema):
    """PATCH body: any subset of the organization's fields; the merged result must still be valid."""


class OrganizationListQuerySchema(schemas.OrganizationQuerySchema):
    q = schemas.fields.String(validate=validate.Length(max=100), metadata={
        "description": "Search in the Chinese and English names (case-insensitive substring)"})


def _visible_organization(session: Session, principal: Principal, organization_id: str) -> Organization:
    """The organization if this caller may see it; 404 otherwise (ids of others cannot be probed)."""
    if principal.role in OWN_ORGANIZATION_ONLY and organization_id != principal.organization_id:
        not_found("organization")
    return get_or_404(session, Organization, organization_id, "organization")


def _normalised(data: dict) -> dict:
    """The body with the credit code in its stored form (empty means none)."""
    if data.get("credit_code") is not None:
        data["credit_code"] = domain.normalise_credit_code(data["credit_code"])
    return data


def _check_merged_state(kind: str, credit_code: str | None) -> None:
    if kind == "enterprise" and not credit_code:
        validation_error({"credit_code": "is required for an organization of kind enterprise"})


def _refuse_duplicate_credit_code(session: Session, credit_code: str | None, own_id: str | None) -> None:
    if not credit_code:
        return
    other = session.scalar(select(Organization.id).where(Organization.credit_code == credit_code))
    if other is not None and other != own_id:
        _duplicate(credit_code, other)


def _duplicate(credit_code: str, other_id: str | None) -> None:
    raise Problem(409, f"An organization with credit_code {credit_code} is already registered.",
                  code="duplicate", fields=["credit_code"],
                  conflicts=[{"kind": "organization", "id": other_id, "credit_code": credit_code}])


def _save(session: Session, organization: Organization, event: str) -> None:
    """Flush, record the event and commit; unique-constraint races and stale versions become 409."""
    credit_code = organization.credit_code  # a rollback expires the object

    def duplicate() -> None:
        other = session.scalar(select(Organization.id).where(Organization.credit_code == credit_code))
        _duplicate(credit_code, other)

    flush_or_409(session, what="organization", on_integrity_error=duplicate)
    events.publish(session, event, organization)
    commit_or_409(session, what="organization", on_integrity_error=duplicate)


def _location(organization: Organization) -> str:
    return url_for("organizations.OrganizationItem", organization_id=organization.id)


@blp.route("/organizations")
class Organizations(MethodView):
    @require()
    @blp.arguments(OrganizationListQuerySchema, location="query")
    @blp.response(200, schemas.OrganizationSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List organizations (enterprise and partner clients: only their own)

        Ordered by name. `kind` filters by kind, `q` searches the Chinese and English names.
        """
        principal = current_principal()
        conditions = []
        if principal.role in OWN_ORGANIZATION_ONLY:
            conditions.append(Organization.id == principal.organization_id
                              if principal.organization_id else false())
        if "kind" in args:
            conditions.append(Organization.kind == args["kind"])
        if args.get("q"):
            conditions.append(or_(Organization.name.icontains(args["q"], autoescape=True),
                                  Organization.name_en.icontains(args["q"], autoescape=True)))
        query = select(Organization).where(*conditions).order_by(Organization.name, Organization.id)
        return paginate_query(db_session(), query, pagination_parameters)

    @require(*STAFF)
    @blp.arguments(schemas.OrganizationSchema)
    @blp.response(201, schemas.OrganizationSchema, headers={"Location": {"schema": {"type": "string"}}})
    def post(self, data):
        """Register an organization (admin, lab_staff)

        `credit_code` (统一社会信用代码) is required for an enterprise, checked per GB 32100-2015 and stored
        normalised (full-width characters folded, upper case); it is unique (409 `duplicate`).
        Publishes `refstd.inventory.organization.registered`.
        """
        data = _normalised(data)
        _check_merged_state(data["kind"], data.get("credit_code"))
        session = db_session()
        _refuse_duplicate_credit_code(session, data.get("credit_code"), None)
        organization = Organization(**data)
        session.add(organization)
        _save(session, organization, "organization.registered")
        return organization, 201, {"Location": _location(organization), "ETag": etag_of(organization.version)}


@blp.route("/organizations/<organization_id>")
class OrganizationItem(MethodView):
    @require()
    @blp.response(200, schemas.OrganizationSchema, headers={"ETag": {"schema": {"type": "string"}}})
    def get(self, organization_id):
        """One organization (enterprise and partner clients: only their own, any other is 404)"""
        organization = _visible_organization(db_session(), current_principal(), organization_id)
        return organization, 200, {"ETag": etag_of(organization.version)}

    @require()
    @blp.arguments(OrganizationPatchSchema(partial=True))
    @blp.response(200, schemas.OrganizationSchema, headers={"ETag": {"schema": {"type": "string"}}})
    def patch(self, data, organization_id):
        """Change an organization (admin, lab_staff; an enterprise or partner client: its own, some fields)

        An enterprise or partner client may change only `contacts`, `address` and `name_en` of its own
        organization; sending another field with a different value is 403 naming that field. The merged
        result is validated as a whole (an enterprise keeps a credit code). Honours `If-Match` (412).
        Publishes `refstd.inventory.organization.updated` when something changed.
        """
        principal = current_principal()
        session = db_session()
        organization = _visible_organization(session, principal, organization_id)
        changes = {field: value for field, value in _normalised(data).items()
                   if getattr(organization, field) != value}
        if not principal.is_staff:
            forbidden = {field: [f"may not be changed by a {principal.role} client (only "
                                 f"{', '.join(SELF_SERVICE_FIELDS)})"]
                         for field in changes if field not in SELF_SERVICE_FIELDS}
            if forbidden:
                allowed = ", ".join(SELF_SERVICE_FIELDS)
                raise Problem(403, f"A {principal.role} client may change only {allowed} of its own "
                                   "organization.", errors=forbidden)
        check_if_match(organization.version)
        _check_merged_state(changes.get("kind", organization.kind),
                            changes.get("credit_code", organization.credit_code))
        if changes:
            if "credit_code" in changes:
                _refuse_duplicate_credit_code(session, changes["credit_code"], organization.id)
            for field, value in changes.items():
                setattr(organization, field, value)
            _save(session, organization, "organization.updated")
        return organization, 200, {"ETag": etag_of(organization.version)}

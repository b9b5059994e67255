"""Authentication: OAuth2 client-credentials tokens, the public keys that verify them, and API clients."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from flask import current_app, request, url_for
from flask.views import MethodView
from marshmallow import EXCLUDE, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.inventory import clients, schemas
from services.inventory.models import ApiClient, Organization
from shared.auth import ROLES, current_principal, require
from shared.errors import Problem, validation_error
from shared.schemas import text_problem
from shared.web import Blueprint, db_session, find_by_id, get_or_404, paginate_query

blp = Blueprint(
    "auth", __name__, url_prefix="/api/v1",
    description="OAuth2 client credentials (RFC 6749 §4.4): exchange an API client's id and secret for a "
                "bearer token (an EdDSA-signed JWT with claims `sub`, `role`, `org`), and the public key set "
                "that verifies it. API clients are managed by admins.",
)

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
GRANT_TYPE = "client_credentials"
# RFC 6749 §5.1: responses carrying credentials must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CLIENT_ID_MAX_LENGTH = 64  # the column's length: a longer id cannot exist
_SECRET_MAX_LENGTH = 512
_TOKEN_PARAMETERS = ("grant_type", "client_id", "client_secret", "scope")
# Roles whose clients act for an organization and so must name one.
_ORGANIZATION_ROLES = ("enterprise", "partner")

_TOKEN_DESCRIPTION = f"""OAuth2 client credentials grant (RFC 6749 §4.4).

The body is form-encoded (`{FORM_CONTENT_TYPE}`): `grant_type=client_credentials` and the client's
credentials, either as `client_id` and `client_secret` form fields or with HTTP Basic authentication
(`Authorization: Basic base64(client_id:client_secret)`, each part form-url-encoded first, RFC 6749 §2.3.1),
not both. A JSON body is not accepted (400 `invalid_request`). `scope` is accepted and ignored: a client's
role decides what its token allows. Unknown parameters are ignored.

Answers `{{"access_token", "token_type": "Bearer", "expires_in"}}` with `Cache-Control: no-store`.
Errors are problem+json whose `code` (also given as `error`, for OAuth2 client libraries) is the RFC 6749
§5.2 error code: 400 `invalid_request` (missing `grant_type`, a repeated parameter, a body that is not
form-encoded, a malformed Basic header, two authentication methods), 400 `unsupported_grant_type`,
401 `invalid_client` (no, unknown, deactivated or wrong credentials; with `WWW-Authenticate: Basic`)."""



class TokenFormSchema(schemas.TokenRequestSchema):
    """The token request's form fields (documentation; unknown parameters are ignored, RFC 6749 §3.2)."""

    class Meta:
        unknown = EXCLUDE


_TOKEN_REQUEST_BODY = {"required": True, "content": {FORM_CONTENT_TYPE: {"schema": TokenFormSchema}}}


class JwksSchema(schemas.Schema):
    keys = schemas.fields.List(schemas.fields.Dict(), metadata={
        "description": "JSON Web Keys (RFC 7517): the Ed25519 public key (kty OKP, crv Ed25519, kid)"})


class ApiClientSchema(schemas.ClientSchema):
    active = schemas.fields.Boolean(dump_only=True, metadata={
        "description": "False once deactivated (DELETE): it can no longer obtain tokens"})


class ApiClientCreatedSchema(ApiClientSchema, schemas.ClientCreatedSchema):
    """A new client with its secret: the only time the secret is shown."""


class ApiClientQuerySchema(schemas.Schema):
    role = schemas.fields.String(validate=validate.OneOf(ROLES))
    organization_id = schemas.fields.String(validate=validate.Length(max=_CLIENT_ID_MAX_LENGTH))
    active = schemas.fields.Boolean()


# -- tokens ----------------------------------------------------------------------------------------

def _oauth_error(status: int, error: str, detail: str, headers: dict | None = None) -> Problem:
    return Problem(status, detail, code=error, error=error, error_description=detail,
                   headers={**NO_STORE, **(headers or {})})


def _invalid_request(detail: str) -> Problem:
    return _oauth_error(400, "invalid_request", detail)


def _invalid_client(detail: str) -> Problem:
    return _oauth_error(401, "invalid_client", detail, {"WWW-Authenticate": 'Basic realm="refstd"'})


def _token_parameters() -> dict[str, str | None]:
    """The form's parameters per RFC 6749 §3.2: empty means absent, none may be repeated."""
    if request.mimetype != FORM_CONTENT_TYPE:
        raise _invalid_request(
            f"The token request body must be form-encoded ({FORM_CONTENT_TYPE}), "
            f"not {request.mimetype or 'empty'}: grant_type=client_credentials&client_id=..&client_secret=..")
    try:
        request.get_data(cache=True).decode("utf-8")  # werkzeug would silently drop an undecodable form
    except UnicodeDecodeError:
        raise _invalid_request("The token request body is not UTF-8.") from None
    parameters: dict[str, str | None] = {}
    for name in _TOKEN_PARAMETERS:
        values = [value for value in request.form.getlist(name) if value != ""]
        if len(values) > 1:
            raise _invalid_request(f"The parameter {name} is given more than once.")
        parameters[name] = values[0] if values else None
    return parameters


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client(f"Client authentication scheme {scheme[:20]!r} is not supported; use HTTP "
                              "Basic or client_id and client_secret in the form.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _invalid_request("The Basic authorization header is not base64 of UTF-8 "
                               "'client_id:client_secret'.") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise _invalid_request("The Basic authorization header must hold 'client_id:client_secret'.")
    # RFC 6749 §2.3.1: both parts are form-url-encoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def _client_credentials(parameters: dict[str, str | None]) -> tuple[str, str]:
    header = request.headers.get("Authorization")
    if header:
        client_id, secret = _basic_credentials(header)
        if parameters["client_secret"] is not None:
            raise _invalid_request("Use one client authentication method: HTTP Basic or client_secret in the "
                                   "form, not both.")
        if parameters["client_id"] is not None and parameters["client_id"] != client_id:
            raise _invalid_request("The form's client_id differs from the one in the Basic "
                                   "authorization header.")
        return client_id, secret
    if parameters["client_id"] is None or parameters["client_secret"] is None:
        raise _invalid_client("Client authentication is required: client_id and client_secret in the form, "
                              "or HTTP Basic.")
    return parameters["client_id"], parameters["client_secret"]


def _authenticated_client(session: Session, client_id: str, secret: str) -> ApiClient:
    plausible = (0 < len(client_id) <= _CLIENT_ID_MAX_LENGTH and len(secret) <= _SECRET_MAX_LENGTH
                 and text_problem(client_id) is None)
    client = clients.verify_credentials(session, client_id, secret) if plausible else None
    if client is None:
        raise _invalid_client("The client is unknown or deactivated, or the secret is wrong.")
    return client


@blp.route("/auth/token")
class Token(MethodView):
    @blp.doc(requestBody=_TOKEN_REQUEST_BODY, description=_TOKEN_DESCRIPTION, security=[])
    @blp.response(200, schemas.TokenSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    @blp.alt_response(400, response="DEFAULT_ERROR", description="invalid_request or unsupported_grant_type")
    @blp.alt_response(401, response="DEFAULT_ERROR", description="invalid_client")
    def post(self):
        """Obtain an access token (no token needed)"""
        # The form is read here rather than through a schema so that every error is an RFC 6749 error
        # (400/401 with its code) instead of a generic 422.
        parameters = _token_parameters()
        if parameters["grant_type"] is None:
            raise _invalid_request("grant_type is required; it must be client_credentials.")
        if parameters["grant_type"] != GRANT_TYPE:
            raise _oauth_error(400, "unsupported_grant_type",
                               f"grant_type {parameters['grant_type'][:40]!r} is not supported; only "
                               f"{GRANT_TYPE} is.")
        client_id, secret = _client_credentials(parameters)
        client = _authenticated_client(db_session(), client_id, secret)
        signer = current_app.extensions["refstd.token_signer"]
        token = signer.issue(client.id, client.role, client.organization_id)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": signer.ttl_seconds}
        return body, 200, NO_STORE


@blp.route("/auth/jwks.json")
class Jwks(MethodView):
    @blp.doc(security=[])
    @blp.response(200, JwksSchema)
    def get(self):
        """The public keys that verify access tokens (JWKS, no token needed)

        The current signing key first, then any key still trusted during a rotation (JWT_TRUSTED_PUBLIC_KEYS).
        A token names its key in the `kid` header; the scheduler and the notifier verify with these keys and
        fetch this set again when a token names a key they have not seen. Only the inventory holds the
        private key.
        """
        jwks = current_app.extensions["refstd.token_signer"].jwks()
        return jwks, 200, {"Cache-Control": "public, max-age=300"}


# -- API clients -----------------------------------------------------------------------------------

def _check_organization(session: Session, role: str, organization_id: str | None) -> None:
    if organization_id is None:
        if role in _ORGANIZATION_ROLES:
            validation_error({"organization_id": f"is required for a {role} client"})
        return
    organization = find_by_id(session, Organization, organization_id)
    if organization is None:
        validation_error({"organization_id": "no such organization"})
    if role == "enterprise" and organization.kind != "enterprise":
        validation_error({"organization_id": "an enterprise client needs an organization of kind "
                                             f"enterprise, not {organization.kind}"})


@blp.route("/clients")
class ApiClients(MethodView):
    @require("admin")
    @blp.arguments(ApiClientQuerySchema, location="query")
    @blp.response(200, ApiClientSchema(many=True))
    @blp.paginate()
    def get(self, args, pagination_parameters):
        """List API clients (admin; secrets are never shown)

        Oldest first; filters `role`, `organization_id`, `active`.
        """
        conditions = [getattr(ApiClient, name) == value for name, value in args.items()]
        query = select(ApiClient).where(*conditions).order_by(ApiClient.created_at, ApiClient.id)
        return paginate_query(db_session(), query, pagination_parameters)

    @require("admin")
    @blp.arguments(schemas.ClientCreateSchema)
    @blp.response(201, ApiClientCreatedSchema, headers={"Location": {"schema": {"type": "string"}}})
    def post(self, data):
        """Create an API client (admin)

        Answers the new `client_id` and `client_secret`; the secret is shown only here and stored hashed.
        enterprise and partner clients must name an existing organization (`organization_id`), an
        enterprise client one of kind enterprise; admin and lab_staff clients may name one.
        """
        session = db_session()
        organization_id = data.get("organization_id")
        _check_organization(session, data["role"], organization_id)
        client_id, secret = clients.new_credentials()
        client = ApiClient(id=client_id, name=data["name"], role=data["role"],
                           organization_id=organization_id, secret_hash=clients.hash_secret(secret),
                           active=True)
        session.add(client)
        session.commit()
        created = {name: getattr(client, name)
                   for name in ("id", "name", "role", "organization_id", "created_at", "active")}
        created["client_secret"] = secret
        location = url_for("auth.ApiClientItem", client_id=client.id)
        return created, 201, {"Location": location, **NO_STORE}


@blp.route("/clients/<client_id>")
class ApiClientItem(MethodView):
    @require("admin")
    @blp.response(200, ApiClientSchema)
    def get(self, client_id):
        """One API client (admin; the secret is never shown)"""
        return get_or_404(db_session(), ApiClient, client_id, "API client")

    @require("admin")
    @blp.response(204)
    @blp.alt_response(409, response="DEFAULT_ERROR", description="own_client: an admin cannot revoke itself")
    def delete(self, client_id):
        """Deactivate (revoke) an API client (admin)

        The client can no longer obtain tokens; tokens it already holds stay valid until they expire
        (`expires_in`). The record is kept (`active: false`). Idempotent. An admin cannot deactivate the
        client it is calling with (409 `own_client`), so the last admin is not locked out by accident.
        A deactivated bootstrap client becomes active again only when BOOTSTRAP_CLIENT_SECRET changes.
        """
        session = db_session()
        client = get_or_404(session, ApiClient, client_id, "API client")
        if client.id == current_principal().client_id:
            raise Problem(409, "An admin cannot deactivate the client it is calling with.", code="own_client")
        client.active = False
        session.commit()
        return None
